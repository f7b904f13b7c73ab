"""Which space of an index a caller means: ``model=name[:version]`` and a transform key,
or the only space there is. Shared by /search with a vector, annotations and classifiers."""

from __future__ import annotations

from sevensense.errors import IndexNotFoundError, RequestError
from sevensense.index.base import VectorIndex
from sevensense.index.records import SpaceInfo


def pick_space(index: VectorIndex, model: str | None, transform: str | None) -> SpaceInfo:
    spaces = index.spaces()
    wanted = transform or "full"
    if model:
        name, _, version = model.partition(":")
        version = version.split(":")[0]
        matches = [
            s
            for s in spaces
            if s.key.model_name == name
            and (not version or s.key.model_version == version)
            and s.key.transform == wanted
        ]
    else:
        matches = [s for s in spaces if s.key.transform == wanted]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        if not spaces:
            raise IndexNotFoundError(f"no index named {index.name!r}", index=index.name)
        raise IndexNotFoundError(
            f"index {index.name!r} has no space for model {model or 'any'} "
            f"and transform {wanted}; it holds {', '.join(s.key.slug for s in spaces)}",
            index=index.name,
        )
    listing = ", ".join(sorted(s.key.slug for s in matches))
    raise RequestError(
        f"the index holds several spaces ({listing}); name one with model=name:version"
    )
