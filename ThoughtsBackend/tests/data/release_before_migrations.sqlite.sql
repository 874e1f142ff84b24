-- The schema that the release before migrations (commit c5ef3a9, its init_db.py: db.create_schema)
-- made on sqlite, as the statements it ran, captured then. test_migrations.py replays it.

CREATE TABLE thought (
	id INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT, 
	username VARCHAR(50) NOT NULL, 
	text VARCHAR(250) NOT NULL, 
	timestamp DATETIME NOT NULL
);

CREATE INDEX ix_thought_username ON thought (username);

CREATE VIRTUAL TABLE IF NOT EXISTS thought_text_trigram USING fts5(
        text, content='thought', content_rowid='id', tokenize='trigram case_sensitive 0'
    );

DROP TRIGGER IF EXISTS thought_text_trigram_insert;

CREATE TRIGGER thought_text_trigram_insert AFTER INSERT ON thought BEGIN
        INSERT INTO thought_text_trigram (rowid, text) VALUES (new.id, new.text);
    END;

DROP TRIGGER IF EXISTS thought_text_trigram_delete;

CREATE TRIGGER thought_text_trigram_delete AFTER DELETE ON thought BEGIN
        INSERT INTO thought_text_trigram (thought_text_trigram, rowid, text) VALUES ('delete', old.id, old.text);
    END;

DROP TRIGGER IF EXISTS thought_text_trigram_update;

CREATE TRIGGER thought_text_trigram_update AFTER UPDATE OF id, text ON thought BEGIN
        INSERT INTO thought_text_trigram (thought_text_trigram, rowid, text) VALUES ('delete', old.id, old.text);
        INSERT INTO thought_text_trigram (rowid, text) VALUES (new.id, new.text);
    END;

INSERT INTO thought_text_trigram (thought_text_trigram) VALUES ('rebuild');
