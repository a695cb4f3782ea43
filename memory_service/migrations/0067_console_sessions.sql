-- Console sign-in sessions and migration uploads, shared by every process.
--
-- A console used to keep both in each process's memory, so behind a proxy a session
-- opened on one replica was unknown to the next. Here a session row is keyed by the
-- SHA-256 of the random id the browser holds (a copy of the table cannot be replayed
-- as a cookie) and names the API key it was opened with: a session is live only while
-- that key is not revoked, which every replica sees at once. Uploads have their own
-- table, keyed by session and a random upload id, so no cookie value can name one.

CREATE TABLE console_sessions (
    id_hash     bytea PRIMARY KEY,
    key_prefix  text NOT NULL REFERENCES api_keys (prefix) ON DELETE CASCADE,
    csrf_token  text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL
);
CREATE INDEX console_sessions_expiry ON console_sessions (expires_at);
CREATE INDEX console_sessions_key ON console_sessions (key_prefix);

CREATE TABLE console_uploads (
    session_hash bytea NOT NULL REFERENCES console_sessions (id_hash) ON DELETE CASCADE,
    upload_id    text NOT NULL,
    payload      text NOT NULL,  -- the export's JSON, sealed with the secrets key when one is set
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz NOT NULL,
    PRIMARY KEY (session_hash, upload_id)
);
CREATE INDEX console_uploads_expiry ON console_uploads (expires_at);
