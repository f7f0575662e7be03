"""Is a pretrained model (model.source=pretrained, a Hugging Face Hub id) available here? Checked
before anything is built, in a few seconds: the local Hub cache first, then whether the Hub can be
reached at all. A model that is neither cached nor downloadable fails with one ConfigError line
saying how to get it, instead of minutes of download retries and tracebacks. When the Hub is
unreachable, HF_HUB_OFFLINE is set for the rest of the process so that nothing retries it."""

from __future__ import annotations

import os
import socket
import threading
from pathlib import Path
from urllib.parse import urlparse

from rlx.errors import ConfigError

CONNECT_TIMEOUT_S = 3.0
TRUE = ("1", "true", "yes", "on")


def hub_offline() -> bool:
    """HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE set: the Hub must not be asked."""
    return any(os.environ.get(k, "0").strip().lower() in TRUE for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def is_cached(repo_id: str, revision: str | None = None) -> bool:
    """Whether the Hub cache holds the model's config.json (what from_pretrained reads first)."""
    from huggingface_hub import try_to_load_from_cache

    try:
        found = try_to_load_from_cache(repo_id, "config.json", revision=revision)
    except Exception:  # an id the cache cannot hold (e.g. malformed): let the loader say why
        return True
    return isinstance(found, str)


def hub_reachable(timeout_s: float = CONNECT_TIMEOUT_S) -> bool:
    """A TCP connection to the Hub (HF_ENDPOINT, default huggingface.co:443) within `timeout_s`,
    name lookup included (done in a thread, since a lookup has no timeout of its own)."""
    url = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    host, port = url.hostname or "huggingface.co", url.port or (80 if url.scheme == "http" else 443)
    result: list[bool] = []

    def connect() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout_s).close()
            result.append(True)
        except OSError:
            result.append(False)

    worker = threading.Thread(target=connect, daemon=True)
    worker.start()
    worker.join(timeout_s + 0.5)
    return bool(result and result[0])


def how_to_get(repo_id: str) -> str:
    """The fix, in words."""
    return (f"download it where there is network (`huggingface-cli download {repo_id}`) and copy the Hugging Face "
            "cache (~/.cache/huggingface) here, or point model.path at a local directory with the checkpoint")


def check_pretrained_available(model_cfg) -> None:
    """ConfigError when model.path is a Hub id that is neither in the local cache nor downloadable
    (offline mode set, or the Hub unreachable: then offline mode is set for this process)."""
    if str(model_cfg.get("source", "scratch")) != "pretrained" or not model_cfg.get("path"):
        return
    path = str(model_cfg.path)
    if Path(path).expanduser().exists() or path.startswith(("/", "./", "../", "~")):
        return  # a local directory: the loader reports a bad one
    revision = model_cfg.get("revision")
    if is_cached(path, revision):
        return
    if hub_offline():
        raise ConfigError(f"model.path={path!r}: not in the local Hugging Face cache and HF_HUB_OFFLINE is set; "
                          + how_to_get(path))
    if not hub_reachable():
        os.environ["HF_HUB_OFFLINE"] = "1"
        raise ConfigError(f"model.path={path!r}: not in the local Hugging Face cache and the Hub is not reachable "
                          "from here; " + how_to_get(path))
