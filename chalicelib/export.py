"""A conversation as a file to keep: Markdown to read, JSON to process (`GET /sessions/{id}/export`)."""

import json
import re
import time

from chalicelib.errors import ExportTooLarge
from chalicelib.history import Turn
from chalicelib.sessions import SessionSummary
from chalicelib.store import ChatStore
from chalicelib.table import iso_time

# Lambda answers at most 6 MB (API Gateway's limit is 10 MB); the headers and the JSON envelope
# Chalice adds need some room.
MAX_EXPORT_BYTES = 5 * 1024 * 1024
CONTENT_TYPES = {"markdown": "text/markdown; charset=utf-8", "json": "application/json"}
EXTENSIONS = {"markdown": "md", "json": "json"}


def turn_record(turn: Turn) -> dict:
    """A turn as the JSON export holds it."""
    record = {"turn": turn.turn_id, "question": turn.query, "answer": turn.answer,
              "asked_at": turn.asked_at, "answered_at": turn.answered_at}
    if turn.replaces:
        record["replaces"] = list(turn.replaces)
    if turn.feedback:
        record["feedback"] = turn.feedback
    return record


def as_json(summary: SessionSummary, turns: list[Turn], exported_at: str) -> str:
    return json.dumps({"sessionid": summary.sessionid, "title": summary.title,
                       "last_activity": summary.last_activity, "exported_at": exported_at,
                       "turns": [turn_record(turn) for turn in turns]}, ensure_ascii=False, indent=2)


def as_markdown(summary: SessionSummary, turns: list[Turn], exported_at: str) -> str:
    """The conversation as the page shows it: each question and answer as written (answers are
    Markdown already), under a heading with its time."""
    lines = [f"# {summary.title or summary.sessionid}", "",
             f"Conversation `{summary.sessionid}`, last active {summary.last_activity}, exported {exported_at}.", ""]
    for turn in turns:
        lines += [f"## You, {turn.asked_at}", "", turn.query, "",
                  f"## Assistant, {turn.answered_at}", "", turn.answer, ""]
        if turn.feedback:
            lines += [f"*Rated {turn.feedback['rating']}*", ""]
    return "\n".join(lines)


def export_session(store: ChatStore, owner: str, session_id: str, kind: str, clock=time.time) -> tuple[str, dict]:
    """The owner's conversation as a file of `kind` ("markdown" or "json"): its text, and the headers
    that make the browser save it. NotFound unless it is the owner's."""
    summary = store.sessions.summary(owner, session_id)
    turns = store.history.every_turn(owner, session_id)
    text = (as_markdown if kind == "markdown" else as_json)(summary, turns, iso_time(clock()))
    if len(text.encode("utf-8")) > MAX_EXPORT_BYTES:
        raise ExportTooLarge(f"the conversation is more than {MAX_EXPORT_BYTES // 2**20} MB; "
                             "read it a page at a time from its messages")
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", summary.sessionid)
    return text, {"Content-Type": CONTENT_TYPES[kind],
                  "Content-Disposition": f'attachment; filename="{name}.{EXTENSIONS[kind]}"'}
