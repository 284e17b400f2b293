"""All of recast's configuration in one pydantic-settings object (env prefix ``RECAST_``).

Nothing else in recast reads ``os.environ``; code asks :func:`get_settings`. With nothing set,
everything runs on one machine: SQLite and a local object store under ``RECAST_DATA_DIR`` and a
Prefect server (:mod:`recast.services.processes`) whose state lives under the same directory.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """recast configuration; every field can be set as ``RECAST_<NAME>`` in the environment."""

    model_config = SettingsConfigDict(env_prefix="RECAST_", extra="ignore")

    data_dir: Path = Field(default=Path("./recast-data"), description="where the embedded database, object store and Prefect state live")
    database_url: str | None = Field(default=None, description="SQLAlchemy URL; default SQLite file in data_dir")
    storage_url: str | None = Field(default=None, description="file:///path or s3://bucket/prefix; default file store in data_dir")
    s3_endpoint_url: str | None = None
    s3_public_endpoint_url: str | None = Field(default=None, description="the S3 endpoint clients outside the network reach; "
                                               "download links handed out by the API are signed for it (default: s3_endpoint_url)")
    s3_region: str = "us-east-1"
    model_dir: Path | None = Field(default=None, description="where larger model weights are placed; never fetched from a hub")
    device: str = "cpu"
    chunk_size: int = Field(default=48, ge=1, le=10_000)
    workers: int = Field(default=0, ge=0, description="parallel chunk tasks on this machine; 0 = number of CPU cores")
    dask_address: str | None = Field(default=None, description="scheduler address of a Dask cluster to run chunk tasks on (tcp://host:8786); needs PostgreSQL")
    render_crf: int = Field(default=16, ge=0, le=51)
    render_preset: str = "veryfast"
    # QC thresholds (defaults; projects may override them in the database)
    qc_identity_pass: float = Field(default=0.9, description="share of sampled frames whose identity transferred, at or above which identity passes")
    qc_identity_fail: float = Field(default=0.5, description="share below which identity fails")
    qc_background_psnr_pass: float = 40.0
    qc_background_psnr_fail: float = 30.0
    qc_pose_error_review: float = 5.0
    qc_face_found_review: float = 0.8
    # one sample every two seconds, plus the worst frames by the every-frame metrics and one per
    # segment: a sample costs ~130 ms (an identity embedding and the defect measures), which at
    # one a second alone was over QC's budget of 20% of the swap (benchmarks/qc.py)
    qc_identity_samples_per_second: float = Field(default=0.5, gt=0, description="frames a second on which identity, hair and the defect measures are computed (plus the worst frames by the every-frame metrics)")
    review_timeout_s: int = Field(default=3 * 24 * 3600, gt=0, description="how long a run paused for review waits for a decision (default 3 days, a weekend); then it ends as rejected, nothing rendered")
    # process hygiene: who owns a run, and how long a process of another host may stay silent
    run_heartbeat_s: float = Field(default=30.0, gt=0, description="how often a process running a flow records that it is alive (run.heartbeat_at)")
    run_heartbeat_timeout_s: float = Field(default=300.0, gt=0, description="a running run of another host whose heartbeat is older than this is marked crashed")
    exit_grace_s: float = Field(default=5.0, gt=0, le=120, description="after Ctrl-C, SIGTERM or a lost Prefect server, how long recast lets the flow unwind before it records the end and exits anyway")
    prefect_startup_timeout_s: float = Field(default=120.0, gt=0, description="how long recast waits for its embedded Prefect server to answer /api/health")
    debug: bool = Field(default=False, description="print tracebacks of errors (also the global --debug option)")
    # trust: content credentials and watermark
    c2pa_cert: Path | None = Field(default=None, description="studio signing certificate chain (PEM); default on one machine: a development CA under data_dir; required (with c2pa_key and watermark_seed) when recast runs as a service and by recast serve and recast worker")
    c2pa_key: Path | None = Field(default=None, description="private key of the signing certificate (PEM)")
    c2pa_trust_anchors: Path | None = Field(default=None, description="CA certificates `recast verify` trusts (PEM); default: the development CA")
    watermark_seed: int | None = Field(default=None, description="secret key of the invisible watermark (a whole number below 2**64, "
                                       "decimal or 0x hex); keep it private to the studio. Unset: a public development key, "
                                       "refused when recast runs as a service (see runs_as_service)")
    watermark_strength: float = Field(default=2.5, gt=0, le=8, description="RMS luma change of the mark inside the head (2.5 ≈ 40 dB PSNR)")
    scratch_enabled: bool = Field(default=True, description="allow the built-in 'scratch' project (no consent required) for local trials")
    api_allowed_buckets: list[str] = Field(default_factory=list, description="S3 buckets the API accepts plate URIs from, besides the store's own")
    api_max_json_bytes: int = Field(default=1 << 20, gt=0)
    api_max_upload_bytes: int = Field(default=2 << 30, gt=0)

    @field_validator("data_dir", "model_dir", "c2pa_cert", "c2pa_key", "c2pa_trust_anchors")
    @classmethod
    def _expand(cls, v: Path | None) -> Path | None:
        return None if v is None else Path(v).expanduser()

    @field_validator("watermark_seed", mode="before")
    @classmethod
    def _seed(cls, v: object) -> object:
        if isinstance(v, str):
            text = v.strip().replace("_", "")
            if text.lower().startswith("0x"):
                try:
                    return int(text, 16)
                except ValueError:
                    return v  # pydantic names the variable and the bad value
            return text or None
        return v

    @property
    def runs_as_service(self) -> str | None:
        """Why this installation is shared by several processes or machines (PostgreSQL or S3
        configured), or None for a one-machine setup. Then every machine must sign and mark
        with the studio's own keys: a development CA made per machine would not verify elsewhere."""
        if self.database_url and not self.database_is_sqlite:
            return "RECAST_DATABASE_URL is PostgreSQL"
        if self.storage_url and self.storage_url.startswith("s3://"):
            return "RECAST_STORAGE_URL is S3"
        return None

    @property
    def resolved_data_dir(self) -> Path:
        return self.data_dir.resolve()

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.resolved_data_dir / 'recast.db'}"

    @property
    def resolved_storage_url(self) -> str:
        if self.storage_url:
            return self.storage_url
        return (self.resolved_data_dir / "store").as_uri()

    @property
    def worker_count(self) -> int:
        return self.workers or max(1, os.cpu_count() or 1)

    @property
    def database_is_sqlite(self) -> bool:
        return self.resolved_database_url.startswith("sqlite")

    @property
    def prefect_home(self) -> Path:
        return self.resolved_data_dir / "prefect"


@functools.lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment."""
    return Settings()


def reset_settings() -> None:
    """Forget the cached settings (tests change the environment between cases)."""
    get_settings.cache_clear()


def configure_prefect_environment(settings: Settings | None = None) -> None:
    """Point the Prefect library at recast's data directory before Prefect is imported.

    This is the one place recast writes the environment: Prefect reads its own settings from
    ``PREFECT_*`` variables at import. Values the user already set are left alone.
    """
    settings = settings or get_settings()
    settings.prefect_home.mkdir(parents=True, exist_ok=True)  # Prefect does not create missing parents
    defaults = {
        "PREFECT_HOME": str(settings.prefect_home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        # the temporary server can take longer than Prefect's 20 s to start on a loaded 2-core machine
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
        # Prefect's console echo of task failures repeats recast's one-line error with a traceback;
        # the full logs still go to the Prefect API (and UI) through its api handler
        "PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL": "CRITICAL",
        "PREFECT_LOGGING_LOG_PRINTS": "false",
        # the temporary local server must not wait on the network for telemetry or updates
        "PREFECT_CLOUD_ENABLE_ORCHESTRATION_TELEMETRY": "false",
    }
    for key, value in defaults.items():
        os.environ.setdefault(key, value)
