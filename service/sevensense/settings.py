"""Configuration: one pydantic-settings model, filled from a named TOML profile plus env.

Precedence (highest first): explicit overrides passed by the caller (CLI flags), environment
variables ``SEVENSENSE_<SECTION>__<FIELD>``, the profile's TOML file, then the defaults below.
The profiles mirror ADR-007 §2.3 (default, field, server) and Appendix A (field, edge, cloud).
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from sevensense.errors import ConfigError

Provider = Literal["cuda", "coreml", "cpu"]
Padding = Literal["zero_pad", "reflect", "discard", "overlap_fill"]
ResampleQuality = Literal["linear", "medium", "high", "audiophile"]
NormMethodSetting = Literal["model", "perch", "peak", "rms", "none"]
GraphOptimization = Literal["disable", "basic", "extended", "all"]

FallbackStrategy = Literal[
    "cpu", "quantized_model", "cached_embedding", "deferred_queue", "zero_vector"
]

PROFILE_NAMES = ("default", "field", "edge", "server", "cloud")
_DEFAULT_PROVIDERS: tuple[Provider, ...] = ("cuda", "coreml", "cpu")
_DEFAULT_FALLBACK: tuple[FallbackStrategy, ...] = ("cpu", "quantized_model", "cached_embedding")


def repo_root() -> Path:
    """The checkout this package was installed from (editable install), else the cwd."""
    here = Path(__file__).resolve()
    for parent in here.parents:
        if (parent / "pyproject.toml").is_file() and (parent / "service").is_dir():
            return parent
    return Path.cwd()


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class InferenceSettings(_Section):
    providers: list[Provider] = Field(default_factory=lambda: list(_DEFAULT_PROVIDERS))
    device_id: int = 0
    intra_threads: int = Field(0, ge=0, description="0 = min(cores, 4), as ADR-007 §2.3")
    inter_threads: int = Field(1, ge=1)
    graph_optimization: GraphOptimization = "all"
    allow_spinning: bool = Field(
        True,
        description="ORT worker threads busy-wait between ops; turn off when cores are shared",
    )
    max_batch_size: int = Field(8, ge=1, le=1024)
    model: str = "birdnet-v2.4"
    model_variant: str = "base"

    def resolved_intra_threads(self) -> int:
        return self.intra_threads or min(os.cpu_count() or 1, 4)


class PreprocessingSettings(_Section):
    window_overlap: float | None = Field(
        None, ge=0.0, lt=1.0, description="None = the model's default overlap"
    )
    energy_threshold: float = Field(1e-6, ge=0.0, description="mean-square below this = silent")
    padding: Padding = "zero_pad"
    resample_quality: ResampleQuality = "high"
    normalization: NormMethodSetting = "model"
    target_peak: float = Field(0.25, gt=0.0, le=1.0)
    target_rms: float = Field(0.1, gt=0.0, le=1.0)
    clip: bool = True
    block_frames: int = Field(65536, ge=1024, description="decode block size in frames")
    max_duration_s: float | None = Field(None, gt=0.0)


class FallbackSettings(_Section):
    strategies: list[FallbackStrategy] = Field(default_factory=lambda: list(_DEFAULT_FALLBACK))


class VerificationSettings(_Section):
    enable_birdnet: bool = False
    birdnet_threshold: float = Field(0.5, ge=0.0, le=1.0)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="SEVENSENSE_", env_nested_delimiter="__", extra="forbid"
    )

    profile: str = "default"
    models_dir: Path = Field(default_factory=lambda: repo_root() / "models")
    top_k: int = Field(5, ge=0, le=100)
    inference: InferenceSettings = Field(default_factory=InferenceSettings)
    preprocessing: PreprocessingSettings = Field(default_factory=PreprocessingSettings)
    fallback: FallbackSettings = Field(default_factory=FallbackSettings)
    verification: VerificationSettings = Field(default_factory=VerificationSettings)

    @field_validator("profile")
    @classmethod
    def _known_profile(cls, value: str) -> str:
        if value not in PROFILE_NAMES and not Path(value).is_file():
            raise ValueError(f"unknown profile {value!r}; choose one of {', '.join(PROFILE_NAMES)}")
        return value


def profile_path(name: str) -> Path:
    """A profile is a packaged TOML file by name, or any TOML file by path."""
    candidate = Path(name)
    if candidate.suffix == ".toml" and candidate.is_file():
        return candidate
    if name not in PROFILE_NAMES:
        raise ConfigError(
            f"unknown profile {name!r}; choose one of {', '.join(PROFILE_NAMES)}",
            profile=name,
        )
    ref = resources.files("sevensense") / "profiles" / f"{name}.toml"
    return Path(str(ref))


def load_settings(profile: str | None = None, **overrides: Any) -> Settings:
    """Build settings for a profile (argument, else $SEVENSENSE_PROFILE, else ``default``)."""
    name = profile or os.environ.get("SEVENSENSE_PROFILE") or "default"
    path = profile_path(name)

    class _ProfiledSettings(Settings):
        @classmethod
        def settings_customise_sources(
            cls,
            settings_cls: type[BaseSettings],
            init_settings: PydanticBaseSettingsSource,
            env_settings: PydanticBaseSettingsSource,
            dotenv_settings: PydanticBaseSettingsSource,
            file_secret_settings: PydanticBaseSettingsSource,
        ) -> tuple[PydanticBaseSettingsSource, ...]:
            return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls, path))

    try:
        return _ProfiledSettings(profile=name, **overrides)
    except ValueError as exc:
        raise ConfigError(f"invalid configuration for profile {name!r}: {exc}") from exc
