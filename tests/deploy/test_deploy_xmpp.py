"""deploy/xmpp snippets and the limits across the kit.

The snippets are loaded the way the XMPP servers read them (Lua for Prosody/Metronome, YAML for
ejabberd) and checked for the options hmac-file-server relies on; the size limits must line up:
XMPP limit <= MaxUploadSize (deploy/systemd/config.toml) <= proxy limit (nginx, Apache).
Real Prosody and ejabberd talking to the server: tests/interop.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

from deploy_util import DEPLOY, missing

XMPP = DEPLOY / "xmpp"
DUMP = Path(__file__).with_name("lua_config_dump.lua")


def size_bytes(value) -> int:
    """The server's size syntax: integer bytes, "10GB" decimal, "10GiB" and bare "10G" binary."""
    if isinstance(value, int):
        return value
    m = re.fullmatch(r"\s*(\d+)\s*([KMGT]?)(i?)(B?)\s*", str(value), re.IGNORECASE)
    assert m, f"unparsable size {value!r}"
    n, unit, binary, b = int(m.group(1)), m.group(2).upper(), m.group(3), m.group(4)
    if not unit:
        return n
    power = "KMGT".index(unit) + 1
    base = 1000 if (b and not binary) else 1024
    return n * base ** power


def max_upload() -> int:
    return size_bytes(tomllib.loads((DEPLOY / "systemd" / "config.toml").read_text())["MaxUploadSize"])


def lua_options(path: Path) -> dict[str, dict[str, str]]:
    lua = shutil.which("lua5.4") or shutil.which("lua")
    if lua is None:
        missing("lua5.4 not installed (Debian package lua5.4)")
    p = subprocess.run([lua, str(DUMP), str(path)], capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, f"{path} does not load as Lua:\n{p.stderr}"
    sections: dict[str, dict[str, str]] = {}
    for line in p.stdout.splitlines():
        section, key, value = line.split("\t", 2)
        sections.setdefault(section, {})[key] = value
    return sections


def only_component(sections: dict) -> dict[str, str]:
    comps = [v for k, v in sections.items() if k.startswith("Component ")]
    assert len(comps) == 1, f"expected one Component section, got {list(sections)}"
    return comps[0]


def test_size_parser():
    assert size_bytes("100MiB") == size_bytes("100M") == 104857600
    assert size_bytes("100MB") == 100_000_000 and size_bytes(5) == 5


def test_prosody_snippet():
    c = only_component(lua_options(XMPP / "prosody.cfg.lua"))
    assert c["_module"] == "http_upload_external"
    assert c["http_upload_external_base_url"].startswith("https://")
    assert c["http_upload_external_base_url"].endswith("/upload/"), "base URL must end in /upload/"
    assert c["http_upload_external_secret"]
    assert int(c["http_upload_external_file_size_limit"]) <= max_upload()
    # Left out = "v1" = ?v=. Anything but "v1" means v2 in the module, so only these two make sense.
    assert c.get("http_upload_external_protocol", "v1") in ("v1", "v2")
    text = (XMPP / "prosody.cfg.lua").read_text()
    assert "?v2=" in text and '"v1"' in text, "the protocol note is missing"


def test_metronome_snippet():
    c = only_component(lua_options(XMPP / "metronome.cfg.lua"))
    assert c["_module"] == "http_upload_external"
    assert c["http_file_external_url"].endswith("/upload/")
    assert c["http_file_secret"]
    assert c["http_file_delete_secret"], "Metronome needs http_file_delete_secret"
    assert c.get("http_file_external_delete_url", c["http_file_external_url"]) == c["http_file_external_url"]
    assert int(c["http_file_size_limit"]) <= max_upload()
    assert "DeleteSecret" in (XMPP / "metronome.cfg.lua").read_text()


def test_ejabberd_snippet():
    try:
        import yaml
    except ImportError:
        missing("python module yaml (PyYAML) missing")
    doc = yaml.safe_load((XMPP / "ejabberd.yml").read_text())
    mod = doc["modules"]["mod_http_upload"]
    for key in ("put_url", "get_url"):
        assert mod[key].startswith("https://") and mod[key].endswith("/upload"), \
            f"{key} must end in /upload without a slash (ejabberd appends /<sha1>/<random>/<name>)"
    assert mod["external_secret"]
    assert mod["max_size"] <= max_upload()


def test_proxy_limits_cover_max_upload_size():
    inc = (DEPLOY / "nginx" / "hmac-file-server-proxy.inc").read_text()
    m = re.search(r"^client_max_body_size\s+(\d+)([kmg]?);", inc, re.MULTILINE | re.IGNORECASE)
    assert m, "client_max_body_size missing from the nginx include"
    nginx_limit = int(m.group(1)) * {"": 1, "k": 1024, "m": 1024 ** 2, "g": 1024 ** 3}[m.group(2).lower()]
    assert nginx_limit >= max_upload(), "nginx would refuse uploads the server accepts"
    apache = (DEPLOY / "apache" / "hmac-file-server.conf").read_text()
    m = re.search(r"^\s*LimitRequestBody\s+(\d+)$", apache, re.MULTILINE)
    assert m and (int(m.group(1)) == 0 or int(m.group(1)) >= max_upload())


@pytest.mark.parametrize("name", ["prosody.cfg.lua", "metronome.cfg.lua"])
def test_lua_syntax(name):
    luac = shutil.which("luac5.4") or shutil.which("luac")
    if luac is None:
        missing("luac not installed (Debian package lua5.4)")
    p = subprocess.run([luac, "-p", str(XMPP / name)], capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, p.stderr
