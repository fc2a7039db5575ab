"""build.sh makes an .mbp that maubot's own loader accepts and imports."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

LOAD_WITH_MAUBOT = r"""
import asyncio, json, sys
from maubot.loader import ZippedPluginLoader
from maubot.plugin_base import Plugin

async def main(path):
    loader = ZippedPluginLoader.get(path)
    cls = await loader.load()
    import roomstate
    print(json.dumps({
        "id": loader.meta.id,
        "version": str(loader.meta.version),
        "database": loader.meta.database,
        "database_type": loader.meta.database_type_str,
        "config": loader.meta.config,
        "class": cls.__name__,
        "is_plugin": issubclass(cls, Plugin),
        "imported_from": roomstate.__file__,
        "has_base_config": b"admins" in loader.sync_read_file("base-config.yaml"),
        "config_class": cls.get_config_class().__name__,
    }))

asyncio.run(main(sys.argv[1]))
"""


def build(out_dir: Path) -> Path:
    result = subprocess.run(["bash", str(ROOT / "build.sh"), str(out_dir)], check=True, capture_output=True, text=True)
    return Path(result.stdout.strip().splitlines()[-1])


def test_mbp_contents_are_clean(tmp_path: Path) -> None:
    mbp = build(tmp_path)
    assert mbp.name.startswith("roomstate-") and mbp.suffix == ".mbp"
    names = zipfile.ZipFile(mbp).namelist()
    assert {
        "maubot.yaml",
        "base-config.yaml",
        "roomstate/__init__.py",
        "roomstate/db/store.py",
        "roomstate/db/migrations/v1.py",
    } <= set(names)
    assert all(
        n in ("maubot.yaml", "base-config.yaml") or (n.startswith("roomstate/") and n.endswith(".py")) for n in names
    ), names


def test_the_mbp_is_byte_reproducible(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first, second = build(tmp_path / "a"), build(tmp_path / "b")
    assert first.read_bytes() == second.read_bytes()


def test_maubot_loader_accepts_the_mbp(tmp_path: Path) -> None:
    mbp = build(tmp_path)
    # A fresh interpreter whose working directory holds no source: roomstate must come from the zip.
    result = subprocess.run(
        [sys.executable, "-c", LOAD_WITH_MAUBOT, str(mbp)], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout.strip().splitlines()[-1])
    assert info["id"] == "org.roomstate.roomstate"
    assert info["database"] is True and info["database_type"] == "sqlalchemy" and info["config"] is True
    assert info["class"] == "RoomStateBot" and info["is_plugin"] and info["config_class"] == "Config"
    assert info["imported_from"].startswith(str(mbp)), info["imported_from"]
    assert info["has_base_config"]
