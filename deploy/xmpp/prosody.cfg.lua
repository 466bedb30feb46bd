-- Prosody: XEP-0363 uploads go to hmac-file-server.
-- Put this in /etc/prosody/conf.d/upload.cfg.lua (or under your VirtualHost section of
-- prosody.cfg.lua), then: prosodyctl check config && prosodyctl reload
--
-- mod_http_upload_external is in Debian's prosody-modules package (apt install prosody-modules),
-- or from https://modules.prosody.im/mod_http_upload_external.html.
--
-- Change: the component name, the base URL (your nginx/Apache server_name, ending in /upload/ or
-- /<UploadSubDir>/), and the secret: the contents of /etc/hmac-file-server/secret.

Component "upload.example.com" "http_upload_external"
  -- Clients PUT to <base>/<random>/<file name>?v=... and others GET <base>/<random>/<file name>.
  http_upload_external_base_url = "https://files.example.com/upload/"
  -- The server's Secret / SecretFile, byte for byte (no trailing newline).
  http_upload_external_secret = "the contents of /etc/hmac-file-server/secret"
  -- Bytes; keep it at or below the server's MaxUploadSize (100MiB = 104857600).
  http_upload_external_file_size_limit = 104857600
  -- Token protocol. Left out (or exactly "v1"), the module signs path + " " + size and sends ?v=.
  -- ANY other value, including "v" or "v2", makes it sign path \0 size \0 content type and send
  -- ?v2=. hmac-file-server accepts both; "v2" also binds the slot to the announced content type.
  -- http_upload_external_protocol = "v2"
  -- Users of other servers allowed to request slots (default: local users only).
  -- http_upload_external_access = { "example.org" }

-- Users find the upload service through the server's disco#items: make sure the component is
-- listed, e.g. in the VirtualHost section:
--   disco_items = { { "upload.example.com", "HTTP File Upload" } }
