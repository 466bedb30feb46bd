-- Metronome: XEP-0363 uploads (and deletions) go to hmac-file-server.
-- Add to /etc/metronome/metronome.cfg.lua, then restart Metronome.
--
-- Change: the component name, the URLs (your nginx/Apache server_name, ending in /upload/ or
-- /<UploadSubDir>/), and both secrets.
--
-- Metronome signs uploads with ?token=HMAC(secret, path \0 size \0 content type), and deletions
-- (DELETE <url>?token=HMAC(secret, path \0 http_file_delete_secret)) that hmac-file-server checks
-- against its DeleteSecret: set DeleteSecret in /etc/hmac-file-server/config.toml to the SAME
-- value as http_file_delete_secret below (when DeleteSecret is unset the server expects the
-- upload secret there instead, so DELETEs fail with 403 unless both secrets are equal).

Component "upload.example.com" "http_upload_external"
  http_file_external_url = "https://files.example.com/upload/"
  -- The server's Secret / SecretFile, byte for byte (no trailing newline).
  http_file_secret = "the contents of /etc/hmac-file-server/secret"
  -- Where Metronome sends DELETE (users' ad-hoc commands, account deletion, expiry below).
  -- Recent Metronome enables deletion only when this is set; older versions always require
  -- http_file_delete_secret.
  http_file_external_delete_url = "https://files.example.com/upload/"
  -- = DeleteSecret in the server's config.toml.
  http_file_delete_secret = "the server's DeleteSecret"
  -- Bytes; keep it at or below the server's MaxUploadSize (100MiB = 104857600).
  http_file_size_limit = 104857600
  -- Metronome DELETEs each user's uploads this many seconds after the upload (default 172800 =
  -- 2 days; checked when the user asks for a new slot). Raise it to keep files longer.
  http_file_expire_after = 172800
