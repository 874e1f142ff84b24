-- The schema that the release before migrations (commit c5ef3a9, its init_db.py: db.create_schema)
-- made on postgresql, as the statements it ran, captured then. test_migrations.py replays it.

CREATE TABLE thought (
	id SERIAL NOT NULL, 
	username VARCHAR(50) NOT NULL, 
	text VARCHAR(250) NOT NULL, 
	timestamp TIMESTAMP WITH TIME ZONE NOT NULL, 
	PRIMARY KEY (id)
);

CREATE INDEX ix_thought_username ON thought (username);

CREATE EXTENSION IF NOT EXISTS pg_trgm;

CREATE INDEX IF NOT EXISTS ix_thought_text_trgm ON thought USING gin (text gin_trgm_ops);

LOCK TABLE thought IN SHARE ROW EXCLUSIVE MODE;

CREATE TABLE IF NOT EXISTS thought_total (
        only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
        thoughts bigint NOT NULL
    );

CREATE OR REPLACE FUNCTION thought_total_update() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF TG_OP = 'INSERT' THEN
            UPDATE thought_total SET thoughts = thoughts + (SELECT count(*) FROM changed);
        ELSIF TG_OP = 'DELETE' THEN
            UPDATE thought_total SET thoughts = thoughts - (SELECT count(*) FROM changed);
        ELSE
            UPDATE thought_total SET thoughts = 0;
        END IF;
        RETURN NULL;
    END $$;

DROP TRIGGER IF EXISTS thought_total_insert ON thought;

CREATE TRIGGER thought_total_insert AFTER INSERT ON thought
        REFERENCING NEW TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION thought_total_update();

DROP TRIGGER IF EXISTS thought_total_delete ON thought;

CREATE TRIGGER thought_total_delete AFTER DELETE ON thought
        REFERENCING OLD TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION thought_total_update();

DROP TRIGGER IF EXISTS thought_total_truncate ON thought;

CREATE TRIGGER thought_total_truncate AFTER TRUNCATE ON thought
        FOR EACH STATEMENT EXECUTE FUNCTION thought_total_update();

INSERT INTO thought_total (thoughts) SELECT count(*) FROM thought
        ON CONFLICT (only_row) DO UPDATE SET thoughts = EXCLUDED.thoughts;
