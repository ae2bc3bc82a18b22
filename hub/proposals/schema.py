"""The proposals capability's tables and views, as named migrations (see hub/schema.py)."""

from __future__ import annotations

import sqlite3

from hub.schema import migration_set, script

MIGRATIONS, migration = migration_set()


@migration
def m300_proposals(db: sqlite3.Connection) -> None:
    script(db,
        """
        -- Firing alerts that named playbooks, waiting for the proposal worker (written inside
        -- the rules engine's transaction, so they are cheap: the worker does the rest).
        CREATE TABLE proposal_requests (
            id INTEGER PRIMARY KEY,
            ts REAL NOT NULL,
            alert_id INTEGER,
            rule TEXT,
            node TEXT NOT NULL,
            alert TEXT NOT NULL,       -- the alert as JSON
            candidates TEXT NOT NULL,  -- [{"playbook": ..., "params": {...}}, ...] as JSON
            done REAL,
            outcome TEXT
        );
        CREATE INDEX proposal_requests_open ON proposal_requests(done, id);
        -- One proposed fix: a playbook with parameters for a node, and where it went.
        CREATE TABLE proposals (
            id INTEGER PRIMARY KEY,
            created REAL NOT NULL,
            updated REAL NOT NULL,
            state TEXT NOT NULL,
            node TEXT NOT NULL,
            rule TEXT,
            alert_id INTEGER,
            request_id INTEGER REFERENCES proposal_requests(id),
            playbook TEXT NOT NULL,
            sha256 TEXT NOT NULL,      -- the script as the hub has it when proposed
            risk TEXT NOT NULL,
            params TEXT NOT NULL,      -- canonical JSON of the validated parameters
            why TEXT,
            evidence TEXT NOT NULL DEFAULT '[]',
            rationale TEXT,
            chosen_by TEXT NOT NULL DEFAULT 'rule',
            decision_id INTEGER,
            auto INTEGER NOT NULL DEFAULT 0,
            expires REAL,              -- an unapproved proposal expires then
            approved_by TEXT,
            approved_at REAL,
            approval_sha256 TEXT,      -- the approval is bound to these four
            approval_params TEXT,
            approval_node TEXT,
            approval_expires REAL,
            reason TEXT,               -- rejection reason, failure reason, escalation reason
            job_id TEXT,
            exit_code INTEGER,
            output TEXT,
            verify_job_id TEXT,
            verify_output TEXT,
            verify_deadline REAL
        );
        CREATE INDEX proposals_state ON proposals(state);
        CREATE INDEX proposals_rule ON proposals(rule, created);
        CREATE TABLE proposal_transitions (
            id INTEGER PRIMARY KEY,
            proposal_id INTEGER NOT NULL REFERENCES proposals(id),
            ts REAL NOT NULL,
            from_state TEXT,
            to_state TEXT NOT NULL,
            actor TEXT NOT NULL,
            note TEXT
        );
        CREATE INDEX proposal_transitions_proposal ON proposal_transitions(proposal_id, id);
        -- Signed jobs for nodes: mode run (approved), check (dry run) or verify.
        CREATE TABLE jobs (
            id TEXT PRIMARY KEY,
            proposal_id INTEGER REFERENCES proposals(id),
            node TEXT NOT NULL,
            mode TEXT NOT NULL,
            playbook TEXT NOT NULL,
            payload TEXT NOT NULL,     -- the exact signed bytes (canonical JSON)
            signature TEXT NOT NULL,   -- Ed25519 over payload, base64
            created REAL NOT NULL,
            expires REAL NOT NULL,
            delivered REAL,
            state TEXT NOT NULL,       -- queued, delivered, running, succeeded, failed, refused, timeout
            finished REAL,
            exit_code INTEGER,
            output TEXT,
            reason TEXT,
            duration_ms INTEGER
        );
        CREATE INDEX jobs_node_state ON jobs(node, state);
        -- Append-only, hash-chained record of every proposal, decision, dispatch and result.
        CREATE TABLE audit (
            id INTEGER PRIMARY KEY,
            ts REAL NOT NULL,
            actor TEXT NOT NULL,
            action TEXT NOT NULL,
            proposal_id INTEGER,
            data TEXT NOT NULL,
            prev_hash TEXT NOT NULL,
            hash TEXT NOT NULL
        );
        CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
            BEGIN SELECT RAISE(ABORT, 'audit is append-only'); END;
        CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
            BEGIN SELECT RAISE(ABORT, 'audit is append-only'); END;
        """
    )


@migration
def m301_proposal_script(db: sqlite3.Connection) -> None:
    # The exact script text proposed (its SHA-256 is proposals.sha256), so `proposals show`
    # shows what was proposed even after the file on disk changed.
    db.execute("ALTER TABLE proposals ADD COLUMN script TEXT")


@migration
def m302_request_diagnosing(db: sqlite3.Connection) -> None:
    # Set when a request's read-only diagnostics were started: its fix is chosen only once they
    # ended, with their output as evidence (the worker skips the request until then).
    db.execute("ALTER TABLE proposal_requests ADD COLUMN diagnosing REAL")


@migration
def m303_policies(db: sqlite3.Connection) -> None:
    script(db,
        """
        -- Standing approvals (homelab-hub policy add): a person approves a bounded policy once.
        CREATE TABLE policies (
            id INTEGER PRIMARY KEY,
            created REAL NOT NULL,
            updated REAL NOT NULL,
            created_by TEXT NOT NULL,
            playbook TEXT NOT NULL,
            sha256 TEXT NOT NULL,      -- the script as approved; a changed script is not covered
            nodes TEXT NOT NULL,       -- JSON list of node names, or ["*"]
            bounds TEXT NOT NULL,      -- JSON {param: {"eq"|"regex"|"min","max"|"any"}}
            max_risk TEXT NOT NULL,
            rate_runs INTEGER NOT NULL,
            rate_period REAL NOT NULL, -- at most rate_runs runs per rate_period seconds
            window TEXT,               -- JSON maintenance window, NULL = any time
            state TEXT NOT NULL CHECK (state IN ('active', 'suspended', 'revoked')),
            failures INTEGER NOT NULL DEFAULT 0,  -- runs in a row that did not verify
            reason TEXT                -- why it was suspended or revoked
        );
        -- Every proposal a policy approved, and how it ended.
        CREATE TABLE policy_runs (
            proposal_id INTEGER PRIMARY KEY REFERENCES proposals(id),
            policy_id INTEGER NOT NULL REFERENCES policies(id),
            started REAL NOT NULL,
            outcome TEXT,
            ended REAL
        );
        CREATE INDEX policy_runs_policy ON policy_runs(policy_id, started);
        """
    )


# Views: one definition each. hub.schema.migrate (re)creates a view after the migrations
# whenever its stored SQL differs from this; a migration never creates or drops one.
VIEWS = {
    "proposals_open": """
        SELECT id, datetime(created, 'unixepoch') AS created, state, node, rule, playbook, risk,
               params, why
        FROM proposals
        WHERE state IN ('proposed', 'approved', 'dispatched', 'running', 'succeeded')
    """,
}
