"""Request validation: pydantic models whose errors become a 400 naming the field."""

import unicodedata
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from chalicelib.errors import InvalidRequest
from chalicelib.table import TURN_KEY_PATTERN

SESSION_ID_PATTERN = r"^[A-Za-z0-9_.:-]{1,128}$"
_SESSION_ID_RULE = "must be 1 to 128 characters from A-Z, a-z, 0-9, '_', '.', ':' and '-', and not '.' or '..'"
# Browsers and curl collapse `sessions/../messages`: such a session could never be listed or deleted.
_PATH_SEGMENTS = {".", ".."}
TURN_ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
_TURN_ID_RULE = "must be 1 to 64 characters from A-Z, a-z, 0-9, '_' and '-'"
_PATTERN_RULES = {"sessionid": _SESSION_ID_RULE, "turn": _TURN_ID_RULE, "replaces": _TURN_ID_RULE}
# A conversation's title, as a user renames it; a feedback comment.
MAX_TITLE_CHARS = 120
MAX_COMMENT_CHARS = 1000
# A search of the conversations' titles.
MAX_SEARCH_CHARS = 100
# Control, format (zero-width and the like), unassigned and surrogate code points: no visible text.
_INVISIBLE_CATEGORIES = {"Cc", "Cf", "Cn", "Cs"}


def _is_visible(character: str) -> bool:
    return not character.isspace() and unicodedata.category(character) not in _INVISIBLE_CATEGORIES


class SessionRef(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)

    sessionid: str = Field(pattern=SESSION_ID_PATTERN)

    @field_validator("sessionid")
    @classmethod
    def _not_a_path_segment(cls, sessionid: str) -> str:
        if sessionid in _PATH_SEGMENTS:
            raise ValueError(_SESSION_ID_RULE)
        return sessionid


class ChatRequest(SessionRef):
    query: str
    turn: str | None = Field(None, pattern=TURN_ID_PATTERN)
    # The conversation's last turn, which this one takes the place of (regenerate, edit and send).
    replaces: str | None = Field(None, pattern=TURN_ID_PATTERN)

    @field_validator("query")
    @classmethod
    def _query_has_text_within_limit(cls, query: str, info: ValidationInfo) -> str:
        if not any(map(_is_visible, query)):
            raise ValueError("must not be empty (it has no visible characters)")
        if any(unicodedata.category(character) == "Cs" for character in query):
            raise ValueError("must be valid Unicode text (it holds a lone surrogate)")
        limit = info.context["max_query_chars"]
        if len(query) > limit:
            raise ValueError(f"must be at most {limit} characters (got {len(query)})")
        return query


class ChatPost(ChatRequest):
    """POST /chat's body: `"async": true` hands the turn to the worker and answers 202."""

    asynchronous: bool = Field(False, alias="async")


class WebSocketChat(ChatRequest):
    """A WebSocket message: `{"action": "chat", "sessionid", "query", "turn"}`."""

    action: Literal["chat"]


def _first_problem(error: ValidationError, model: type[BaseModel]) -> InvalidRequest:
    problem = error.errors(include_url=False)[0]
    field = str(problem["loc"][0]) if problem["loc"] else None
    kind = problem["type"]
    if kind == "json_invalid":
        return InvalidRequest(f"body is not valid JSON: {problem['ctx']['error']}")
    if kind == "model_type":
        required = " and ".join(f"'{name}'" for name, info in model.model_fields.items() if info.is_required()
                                and name != "action")
        return InvalidRequest(f"body must be a JSON object with {required}")
    if kind == "extra_forbidden":
        return InvalidRequest(f"'{field}' is not a field of this request", field=field)
    if kind == "literal_error":
        return InvalidRequest(f"'{field}' must be {problem['ctx']['expected']}", field=field)
    if kind == "missing":
        message = "is required"
    elif kind == "string_pattern_mismatch":
        message = _PATTERN_RULES.get(field, "is not a cursor this API gave out")
    elif kind == "string_type":
        message = "must be a string"
    elif kind == "bool_type":
        message = "must be true or false"
    elif kind == "string_too_long":
        message = f"must be at most {problem['ctx']['max_length']} characters"
    else:
        message = problem["msg"].removeprefix("Value error, ")
    return InvalidRequest(f"'{field}' {message}", field=field)


def _validated(validate, *args, **kwargs):
    """Run a pydantic validation (a model's classmethod); its first problem becomes an InvalidRequest."""
    try:
        return validate(*args, **kwargs)
    except ValidationError as error:
        raise _first_problem(error, validate.__self__) from None


def parse_chat_request(data, max_query_chars: int) -> ChatRequest:
    """Validate the query-string parameters (a mapping, or None) of GET /chat."""
    return _validated(ChatRequest.model_validate, dict(data or {}), context={"max_query_chars": max_query_chars})


def parse_chat_json(body: bytes, max_query_chars: int) -> ChatPost:
    """Validate the JSON body of POST /chat."""
    return _validated(ChatPost.model_validate_json, body, context={"max_query_chars": max_query_chars})


def parse_websocket_chat(body: str, max_query_chars: int) -> WebSocketChat:
    """Validate a WebSocket message."""
    return _validated(WebSocketChat.model_validate_json, body, context={"max_query_chars": max_query_chars})


class MessagesPage(SessionRef):
    # 50 turns of the longest questions and answers (3000 characters and 13.8 KB, each character
    # escaped to 12 bytes at worst) are under 4 MB: a page always fits Lambda's 6 MB response.
    limit: int = Field(20, ge=1, le=50)
    after: str | None = Field(None, pattern=TURN_KEY_PATTERN)


def parse_messages_page(sessionid: str, params) -> MessagesPage:
    """Validate GET /sessions/{sessionid}/messages: the id and the optional `limit` and `after`."""
    return _validated(MessagesPage.model_validate, {**dict(params or {}), "sessionid": sessionid}, strict=False)


class SessionsPage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    limit: int = Field(20, ge=1, le=50)
    # The cursor is the sessions store's to read (`after` of a later page); here only its alphabet and size.
    after: str | None = Field(None, pattern=r"^[A-Za-z0-9_-]{1,600}$")
    # Words the titles must contain (any case, any order).
    q: str | None = Field(None, max_length=MAX_SEARCH_CHARS)

    @field_validator("q")
    @classmethod
    def _words(cls, q: str | None) -> str | None:
        return _visible_text(q.strip()) if q is not None else None


def parse_sessions_page(params) -> SessionsPage:
    """Validate GET /sessions: the optional `limit`, `after` and `q`."""
    return _validated(SessionsPage.model_validate, dict(params or {}), strict=False)


def _visible_text(text: str) -> str:
    """`text`, if it has visible characters and no control characters (line breaks included)."""
    if not any(map(_is_visible, text)):
        raise ValueError("must not be empty (it has no visible characters)")
    if any(unicodedata.category(character) in ("Cc", "Cs") for character in text):
        raise ValueError("must be one line of text, without control characters")
    return text


class SessionUpdate(BaseModel):
    """PATCH /sessions/{id}'s body: the conversation's new title."""

    model_config = ConfigDict(extra="forbid", strict=True)

    title: str

    @field_validator("title")
    @classmethod
    def _one_line_within_limit(cls, title: str) -> str:
        title = _visible_text(title.strip())
        if len(title) > MAX_TITLE_CHARS:
            raise ValueError(f"must be at most {MAX_TITLE_CHARS} characters (got {len(title)})")
        return title


def parse_session_update(body: bytes) -> SessionUpdate:
    return _validated(SessionUpdate.model_validate_json, body or b"null")


class Feedback(BaseModel):
    """PUT /sessions/{id}/turns/{turn}/feedback's body: a rating of the answer and a comment."""

    model_config = ConfigDict(extra="forbid", strict=True)

    rating: Literal["up", "down"]
    comment: str | None = Field(None, max_length=MAX_COMMENT_CHARS)

    @field_validator("comment")
    @classmethod
    def _valid_unicode(cls, comment: str | None) -> str | None:
        if comment is not None and any(unicodedata.category(character) == "Cs" for character in comment):
            raise ValueError("must be valid Unicode text (it holds a lone surrogate)")
        return comment.strip() or None if comment is not None else None


def parse_feedback(body: bytes) -> Feedback:
    return _validated(Feedback.model_validate_json, body or b"null")


class ExportRequest(SessionRef):
    format: Literal["markdown", "json"] = "markdown"


def parse_export(sessionid: str, params) -> ExportRequest:
    """Validate GET /sessions/{sessionid}/export: the id and the optional `format`."""
    return _validated(ExportRequest.model_validate, {**dict(params or {}), "sessionid": sessionid})


def parse_session_id(sessionid: str) -> str:
    return _validated(SessionRef.model_validate, {"sessionid": sessionid}).sessionid


class TurnRef(BaseModel):
    model_config = ConfigDict(strict=True)

    turn: str = Field(pattern=TURN_ID_PATTERN)


def parse_turn_id(turn: str) -> str:
    return _validated(TurnRef.model_validate, {"turn": turn}).turn
