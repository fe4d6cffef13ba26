-- keygate sessions: one epoch per user. A session token carries the epoch its
-- user had when it was issued; ending the user's sessions (logout, password
-- change) raises the epoch, so every older token is refused on every instance.
CREATE TABLE IF NOT EXISTS session_epochs (
    subject TEXT PRIMARY KEY NOT NULL,
    epoch INTEGER NOT NULL
);
