"""The partner API's routes, one router per group; serving/http/app.py mounts them."""
