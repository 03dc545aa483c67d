-- Row counts per inbox state and per outbox destination and state, kept by triggers, so
-- status and the overview read a handful of rows instead of counting a million-event inbox
-- (a covering-index scan of every event on every call). Never edit a landed migration: add a new one.
CREATE TABLE ledger_counts (
    tbl TEXT    NOT NULL,                -- inbox | outbox
    key TEXT    NOT NULL,                -- inbox: state; outbox: destination || ':' || state
    n   INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (tbl, key)
) WITHOUT ROWID;

INSERT INTO ledger_counts (tbl, key)
SELECT 'inbox', s FROM (SELECT 'pending' AS s UNION ALL SELECT 'applied' UNION ALL SELECT 'echo'
    UNION ALL SELECT 'superseded' UNION ALL SELECT 'conflicted' UNION ALL SELECT 'dead_lettered');
INSERT INTO ledger_counts (tbl, key)
SELECT 'outbox', d || ':' || s FROM (SELECT 'crm' AS d UNION ALL SELECT 'billing'),
    (SELECT 'pending' AS s UNION ALL SELECT 'done' UNION ALL SELECT 'dead_lettered' UNION ALL SELECT 'cancelled');
UPDATE ledger_counts SET n = (SELECT COUNT(*) FROM inbox WHERE inbox.state = ledger_counts.key) WHERE tbl = 'inbox';
UPDATE ledger_counts SET n = (SELECT COUNT(*) FROM outbox WHERE outbox.destination || ':' || outbox.state = ledger_counts.key)
WHERE tbl = 'outbox';

CREATE TRIGGER inbox_count_insert AFTER INSERT ON inbox BEGIN
    UPDATE ledger_counts SET n = n + 1 WHERE tbl = 'inbox' AND key = NEW.state;
END;
CREATE TRIGGER inbox_count_update AFTER UPDATE OF state ON inbox WHEN OLD.state IS NOT NEW.state BEGIN
    UPDATE ledger_counts SET n = n - 1 WHERE tbl = 'inbox' AND key = OLD.state;
    UPDATE ledger_counts SET n = n + 1 WHERE tbl = 'inbox' AND key = NEW.state;
END;
CREATE TRIGGER inbox_count_delete AFTER DELETE ON inbox BEGIN
    UPDATE ledger_counts SET n = n - 1 WHERE tbl = 'inbox' AND key = OLD.state;
END;

CREATE TRIGGER outbox_count_insert AFTER INSERT ON outbox BEGIN
    UPDATE ledger_counts SET n = n + 1 WHERE tbl = 'outbox' AND key = NEW.destination || ':' || NEW.state;
END;
CREATE TRIGGER outbox_count_update AFTER UPDATE OF state, destination ON outbox
WHEN OLD.state IS NOT NEW.state OR OLD.destination IS NOT NEW.destination BEGIN
    UPDATE ledger_counts SET n = n - 1 WHERE tbl = 'outbox' AND key = OLD.destination || ':' || OLD.state;
    UPDATE ledger_counts SET n = n + 1 WHERE tbl = 'outbox' AND key = NEW.destination || ':' || NEW.state;
END;
CREATE TRIGGER outbox_count_delete AFTER DELETE ON outbox BEGIN
    UPDATE ledger_counts SET n = n - 1 WHERE tbl = 'outbox' AND key = OLD.destination || ':' || OLD.state;
END;
