"""One request planner below the faces: a request's options in, one validated plan out."""
