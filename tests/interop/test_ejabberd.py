"""ejabberd (Debian ejabberd, mod_http_upload with put_url/get_url pointing at
hmac-file-server and external_secret) -> slixmpp XEP-0363 client ->
hmac-file-server.  ejabberd signs v tokens over <sha1(bare jid)>/<random>/<name>."""

import hashlib
import re

from interop_util import scenario_slot, scenario_upload_file

SIZE = 300 * 1024 + 17


def test_ejabberd_upload_file(ejabberd, hfs):
    scenario_upload_file(ejabberd, hfs, "Grüße aus Köln (2).jpg", SIZE)


def test_ejabberd_slot_put_get_conflict_forbidden(ejabberd, hfs):
    filename = "hello wörld (1).bin"
    user_hash = hashlib.sha1(ejabberd.jid.encode()).hexdigest()

    def expect_path(path):
        segments = path.split("/")
        assert len(segments) == 3, f"ejabberd slot path {path!r} should have 3 segments"
        assert segments[0] == user_hash, f"first segment of {path!r} is not sha1({ejabberd.jid})"
        assert re.fullmatch(r"[A-Za-z0-9]{20,}", segments[1]), f"odd random segment in {path!r}"
        # ejabberd replaces characters other than letters, digits, '_', '.', '-' by '_'.
        assert segments[2] == "hello_wörld__1_.bin", f"ejabberd file name rewrite changed: {path!r}"

    scenario_slot(ejabberd, hfs, filename, SIZE, "application/octet-stream", expect_path)
