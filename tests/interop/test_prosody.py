"""Prosody (Debian prosody + prosody-modules, mod_http_upload_external) ->
slixmpp XEP-0363 client -> hmac-file-server.  Parametrised over the module's
token protocol: v (default) and v2."""

import re

from interop_util import scenario_slot, scenario_upload_file

SIZE = 300 * 1024 + 17  # binary, not a multiple of any buffer size


def test_prosody_upload_file(prosody, hfs):
    scenario_upload_file(prosody, hfs, "Grüße aus Köln (2).jpg", SIZE)


def test_prosody_slot_put_get_conflict_forbidden(prosody, hfs):
    filename = "hello wörld (1).bin"

    def expect_path(path):
        # Prosody signs "<uuid>/<filename>" with the name unchanged.
        assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}/" + re.escape(filename),
                            path), f"unexpected Prosody slot path {path!r}"

    scenario_slot(prosody, hfs, filename, SIZE, "application/octet-stream", expect_path)
