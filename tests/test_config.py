"""Config: defaults equal base-config.yaml, partial and invalid configs fall back cleanly."""
from __future__ import annotations

from typing import Any, Dict

from mautrix.util.config import RecursiveDict

from roomstate.config import DEFAULTS, Config

from .conftest import load_base_config, make_config


def flatten(data: Dict[str, Any], prefix: str = "") -> Dict[str, Any]:
    flat: Dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def test_code_defaults_match_base_config() -> None:
    assert flatten(dict(load_base_config())) == DEFAULTS


def test_partial_config_without_base_uses_defaults() -> None:
    """maubot standalone: plugin_config holds only what the user wrote, and the base is empty."""
    data = {"admins": ["@root:x"]}
    config = Config(load=lambda: data, load_base=lambda: RecursiveDict({}), save=lambda _: None)
    config.load_and_update()
    assert config.admins == ["@root:x"]
    assert config.page_size == 20 and config.whereis_visibility == "shared"
    assert config.resync_power_level == 100 and config.retention_seconds == 168 * 3600


def test_explicit_null_power_level_is_kept() -> None:
    config = make_config({"resync_power_level": None})
    config.load_and_update()
    assert config.resync_power_level is None


def test_invalid_values_fall_back_with_a_warning(caplog) -> None:
    config = make_config({"rooms.page_size": "lots", "whereis.visibility": "nobody", "sync.concurrency": 0})
    config.load_and_update()
    assert config.page_size == 20
    assert config.whereis_visibility == "shared"
    assert config.sync_concurrency == 1
    assert "rooms.page_size: 'lots' is not a number" in caplog.text
    assert "whereis.visibility: 'nobody' is not one of" in caplog.text
