#!/usr/bin/env bash
# Build roomstate-<version>.mbp: the archive to upload in the maubot manager.
# Usage: ./build.sh [output-dir]   (default: this directory). Needs only python3; no network.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
out_dir="$(mkdir -p "${1:-$here}" && cd "${1:-$here}" && pwd)"
cd "$here"
python3 - "$out_dir" <<'PY'
import os, re, sys, zipfile

out_dir = sys.argv[1]
meta = open("maubot.yaml", encoding="utf-8").read()
version = re.search(r"^version:\s*['\"]?([^'\"\s]+)", meta, re.M).group(1)
files = ["maubot.yaml", "base-config.yaml"]
for root, dirs, names in os.walk("roomstate"):
    dirs[:] = sorted(d for d in dirs if d != "__pycache__")
    files += [os.path.join(root, n) for n in sorted(names) if n.endswith(".py")]
path = os.path.join(out_dir, f"roomstate-{version}.mbp")
with zipfile.ZipFile(path + ".tmp", "w", zipfile.ZIP_DEFLATED) as archive:
    for name in files:
        info = zipfile.ZipInfo(name.replace(os.sep, "/"), date_time=(2020, 1, 1, 0, 0, 0))
        info.external_attr = 0o644 << 16
        info.compress_type = zipfile.ZIP_DEFLATED
        with open(name, "rb") as source:
            archive.writestr(info, source.read())
os.replace(path + ".tmp", path)
print(path)
PY
