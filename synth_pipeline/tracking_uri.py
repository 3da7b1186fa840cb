"""MLflow tracking URI pre-checks: a supported scheme, and credentials kept out of URLs and messages.

``http://user:password@host:port`` is split into the plain URL and the credentials: the health
check sends them as a basic-auth header, MLflow gets them through ``MLFLOW_TRACKING_USERNAME`` /
``MLFLOW_TRACKING_PASSWORD`` (see :func:`credentials_env`), and no message ever shows the password.
"""

from __future__ import annotations

import base64
import os
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager

from synth_pipeline.errors import TrackingError

# what MLflow's tracking + registry stores accept (plain paths are a local file store)
SCHEMES = ("http", "https", "sqlite", "postgresql", "mysql", "mssql", "file", "databricks")


def redact(uri: str) -> str:
    """The URI with any password replaced by ``***``."""
    parts = urllib.parse.urlsplit(uri) if "://" in uri else None
    if parts is None or parts.password is None:
        return uri
    netloc = parts.netloc.rsplit("@", 1)[1]
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{parts.username}:***@{netloc}"))


def check_scheme(uri: str) -> str:
    """The URI's scheme (``''`` for a plain path) if MLflow can use it; else TrackingError listing them."""
    if not isinstance(uri, str) or not uri.strip():
        raise TrackingError("MLflow tracking URI is empty; set mlflow.tracking_uri or MLFLOW_TRACKING_URI "
                            f"(schemes: {', '.join(SCHEMES)}, or a local folder path)")
    if "://" not in uri and not uri.startswith("file:"):
        return ""  # a local folder: MLflow's file store
    scheme = uri.split(":", 1)[0].lower()
    base = scheme.split("+", 1)[0]  # postgresql+psycopg2 -> postgresql
    if base not in SCHEMES:
        raise TrackingError(
            f"MLflow tracking URI '{redact(uri)}' has the unsupported scheme '{scheme}'; valid schemes: "
            f"{', '.join(SCHEMES)} (e.g. http://127.0.0.1:5000 or sqlite:///mlflow.db), or a local folder path"
        )
    return base


def split_credentials(uri: str) -> tuple[str, str | None, str | None]:
    """``http(s)://user:pw@host:port/p`` -> (``http(s)://host:port/p``, user, pw); other URIs unchanged."""
    if not uri.lower().startswith(("http://", "https://")):
        return uri, None, None
    parts = urllib.parse.urlsplit(uri)
    if parts.username is None and parts.password is None:
        return uri, None, None
    host = parts.netloc.rsplit("@", 1)[1]
    clean = urllib.parse.urlunsplit(parts._replace(netloc=host))
    user = urllib.parse.unquote(parts.username) if parts.username is not None else None
    pw = urllib.parse.unquote(parts.password) if parts.password is not None else None
    return clean, user, pw


def health_request(uri: str):
    """A ``urllib`` request for ``<uri>/health`` without credentials in the URL (basic auth header instead)."""
    import urllib.request

    clean, user, pw = split_credentials(uri)
    req = urllib.request.Request(clean.rstrip("/") + "/health")
    user = user if user is not None else os.environ.get("MLFLOW_TRACKING_USERNAME")
    pw = pw if pw is not None else os.environ.get("MLFLOW_TRACKING_PASSWORD")
    if user is not None:
        token = base64.b64encode(f"{user}:{pw or ''}".encode()).decode()
        req.add_header("Authorization", f"Basic {token}")
    return req


@contextmanager
def credentials_env(uri: str) -> Iterator[str]:
    """Yield the URI without credentials, with ``MLFLOW_TRACKING_USERNAME`` / ``_PASSWORD`` set from it
    for the block (restored afterwards). URIs without credentials pass unchanged."""
    clean, user, pw = split_credentials(uri)
    if user is None and pw is None:
        yield uri
        return
    keys = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")
    saved = {k: os.environ.get(k) for k in keys}
    os.environ["MLFLOW_TRACKING_USERNAME"] = user or ""
    os.environ["MLFLOW_TRACKING_PASSWORD"] = pw or ""
    try:
        yield clean
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
