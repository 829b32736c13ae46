"""Deterministic generator of realistic Harbor 0.25 job directories, with ground truth.

Why: the converters must be tested (and benchmarked) on job dirs that look like what trajgen leaves on
disk, and the tests must know what a faithful converter has to recover. Real jobs cannot be shipped
(size, licences) and have no ground truth. This module writes job dirs whose every file follows the
shapes in ``docs/input-formats.md`` §2-8 and returns, separately, the conversations that produced them.

Layout decision: Harbor's ``JobConfig.agents`` is a list, so one job may run several agents; its
``result.json`` then has one ``stats.evals`` key per agent. The bundled demo is therefore ONE mixed job
(:func:`generate_demo_job`, 16 trials plus the 6 ATIF-only shape trials of :mod:`tests.support.atif_shapes`
(codex, openhands, gemini-cli, decorated claude-code ATIF, terminus-2 ATIF-v1.6 rebuilt and summarised;
``GeneratedJob.atif_shape_trials``, not listed in the job's result.json), what ``config.demo.yaml`` reads
with ``scaffold: auto``).
:func:`generate_demo_jobs` writes the same 16 trials as one job per scaffold (``<root>/claude-code``,
``<root>/open-code``, ``<root>/openhands-sdk``, ``<root>/terminus2``; 3 or 4 trials each), the usual shape
of a trajgen job, for converters that take one scaffold per job. Together the trials cover:

- all four scaffolds; resolved (reward 1.0) and unresolved (0.0) trials;
- claude-code: Anthropic-shaped proxy lines (``system`` block list with a per-request ``cch=<hex>;``
  billing header, ``thinking``/``text``/``tool_use``/``tool_result`` blocks, moving ``cache_control``,
  ``signature``), a ``Task`` sub-agent conversation interleaved in the log, a ``<tool_use_error>`` result;
- claude-code in the proxy's OpenAI translation (``TrialPlan.proxy_shape="openai"``): the system prompt
  as text parts after a per-request billing part, the newest message of each request as text parts with
  ``cache_control`` and a ``<system-reminder>`` part, the same message a plain string one request later;
- open-code: a session title-generator side call (3 messages, logged out of ``request_time`` order);
  one trial with ONLY ``agent/trajectory.json`` (no proxy log); OpenCode's two leading system prompts
  (``two_system``) as two OpenAI system messages and as two blocks of an Anthropic-shaped ``system``;
- aborted final requests (``aborted_final``: an empty final response) in both proxy-log shapes;
- openhands-sdk: OpenAI shape; one trial with ``AgentTimeoutError`` AND a valid reward 1.0 (the log
  ends on an assistant tool call that never got its result); a trial whose instance id is longer than
  32 characters (truncated trial dir name);
- terminus2: text protocol (JSON ``analysis``/``plan``/``commands`` as assistant content, no tools, no
  system message), ``raw_content`` ATIF-v1.8 whose observations hold the next prompt;
- one failed proxy request (``success: false``, ``response_body: null``) followed by its retry, parallel
  tool calls, narration + tool call in one turn, ``reasoning_content``, CJK and emoji text;
- SWE-style instance ids ``owner__repo-N`` from a fixed repo list that includes SWE-bench repos
  (``django/django``, ``astropy/astropy``, ``sympy/sympy``) so repo exclusion is exercised.

:func:`generate_job` writes one job of any size for benchmarks: ``n_trials`` up to thousands,
``max_turns`` up to 60, ``payload_bytes`` of padding per tool output (the cumulative log repeats it in
every later request, so a job grows roughly with ``n_trials * payload_bytes * max_turns**2 / 2``).
Files are streamed trial by trial (each proxy line is built from pre-serialised message fragments with
orjson); only one trial is in memory at a time. Truth can be switched off for huge jobs.

Determinism: all randomness comes from ``random.Random`` seeded with strings derived from ``seed``;
timestamps derive from ``seed`` too. Same arguments -> byte-identical files.

Ground truth (:class:`ExpectedConversation`, never written into the job dir) is what a faithful
converter must recover for a trial, one entry per conversation (main, then sub-agents):

- litellm-backed trials: the **last successful model call** of each conversation: its request messages
  plus its response assistant message, as canonical :class:`~sft.core.canonical.Message` objects,
  with the tools of that request in OpenAI function form. Nothing is filtered: tool-use error turns are
  present (tool message ``is_error=True``), the system prompt is verbatim (no model-name rewriting), and
  a timed-out trial ends on an assistant turn with ``tool_calls`` and no result. Auxiliary calls
  (open-code title generator) are not conversations.
- Churn and repairs as the pipeline resolves them: several system prompts are ONE system message, their
  texts joined with ``"\\n"``; the last request's newest message keeps its reminder part (``"\\n"`` +
  :data:`CLAUDE_REMINDER`); an aborted final response is trimmed back to the last complete assistant turn
  (and the results after it), as the repair ``trimmed_aborted_final_turn`` does.
- Anthropic-shaped lines map to canonical as: ``system`` text blocks joined with ``"\\n"`` (the
  ``x-anthropic-billing-header ... cch=<hex>;`` block of the LAST call included verbatim); assistant
  ``thinking`` -> ``reasoning_content``, ``text`` -> ``content``, ``tool_use`` -> ``tool_calls`` (``input``
  as arguments); each ``tool_result`` block -> one ``tool`` message (string content, or the text of
  its single text block), ``is_error`` from the block; tools ``{name, description, input_schema}`` ->
  ``{"type": "function", "function": {name, description, parameters}}``. Every message generated here
  has at most one text and one thinking block, so no other joining rule is needed.
- OpenAI-shaped lines: ``content`` null -> ``""``; ``reasoning_content`` kept; ``arguments`` strings
  parsed to objects.
- ATIF-backed trials (the open-code trial without a proxy log; all terminus2 trials, whose reference
  converter reads ATIF): what ATIF holds. No system message and no tools where the scaffold's ATIF has
  none (opencode, terminus-2). terminus2: user step 1 -> user; each agent step -> assistant (raw text,
  reasoning); each observation except the last -> the next user message.
- ``agent_id`` of a claude-code sub-agent is the ``subagent_type`` of its Task call (informational:
  the proxy log does not carry it).
"""

from __future__ import annotations

import hashlib
import random
import string
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any

import orjson

from sft.core.canonical import AgentType, Message, SourceKind, ToolCall
from sft.core.io_utils import atomic_writer
from tests.support.atif_shapes import AtifShape
from tests.support.atif_shapes import atif_shapes as all_atif_shapes

SCAFFOLDS: tuple[str, ...] = ("claude-code", "open-code", "openhands-sdk", "terminus2")
HARBOR_AGENT_NAME: dict[str, str] = {
    "claude-code": "claude-code",
    "open-code": "opencode",
    "openhands-sdk": "openhands-sdk",
    "terminus2": "terminus-2",
}
AGENT_VERSION: dict[str, str] = {
    "claude-code": "2.1.118",
    "open-code": "1.0.134",
    "openhands-sdk": "1.4.1",
    "terminus2": "2.0.0",
}
ATIF_VERSION: dict[str, str] = {
    "claude-code": "ATIF-v1.7",
    "open-code": "ATIF-v1.7",
    "openhands-sdk": "ATIF-v1.5",
    "terminus2": "ATIF-v1.8",
}
TEACHER_MODEL = "GLM-5-FP8"
MODEL_STRING = f"openai/{TEACHER_MODEL}"
DATASET = "swe-demo"
# (owner, repo); the first three are SWE-bench repositories (must be excluded by the repo filter).
EXCLUDED_REPOS: tuple[tuple[str, str], ...] = (
    ("django", "django"),
    ("astropy", "astropy"),
    ("sympy", "sympy"),
)
KEPT_REPOS: tuple[tuple[str, str], ...] = (("acme", "widgets"), ("octo", "toolkit"), ("nimbus", "cloud-kit"))
REPOS: tuple[tuple[str, str], ...] = EXCLUDED_REPOS + KEPT_REPOS
TOOL_USE_ERROR = (
    "<tool_use_error>File has not been read yet. Read it first before writing to it.</tool_use_error>"
)
OPENCODE_TOOL_ERROR = (
    "The arguments provided to the tool are invalid: Invalid input: expected string, received undefined "
    "at path filePath"
)
_SHORTUUID_ALPHABET = "23456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_JSON_OPTS = orjson.OPT_INDENT_2
_EPOCH_BASE = datetime(2026, 4, 29, 12, 0, 0, tzinfo=UTC)


# ----------------------------------------------------------------------------------------------------
# Public data types
# ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ExpectedConversation:
    """One conversation a faithful converter must recover from a trial (see the module docstring)."""

    messages: list[Message]
    tools: list[dict[str, Any]]
    agent_type: AgentType
    agent_id: str | None
    source_kind: SourceKind


@dataclass(frozen=True)
class TrialPlan:
    """What one trial contains; the generator turns it into files and truth."""

    scaffold: str
    instance_id: str
    n_turns: int  # assistant turns of the main conversation (tool turns + final answer)
    reward: float | None = 1.0
    exception: str | None = None  # e.g. "AgentTimeoutError": the run stops before the final answer
    reasoning: bool = True
    parallel: bool = False
    narration: bool = True
    unicode: bool = False
    tool_error: bool = False
    failed_retry: bool = False
    subagent: bool = False  # claude-code only: a Task sub-agent conversation
    title_call: bool = False  # open-code only: a title-generator side call
    atif_only: bool = False  # no agent/litellm-trajectory.jsonl
    # The proxy-log shape: "" = the scaffold's usual one (Anthropic for claude-code, OpenAI otherwise);
    # "openai" for claude-code is the proxy's OpenAI translation of its Anthropic requests, with per-request
    # churn (the newest message as text parts with cache_control and a reminder part, a string one request
    # later; the system prompt as text parts with a per-request billing part).
    proxy_shape: str = ""
    two_system: bool = False  # open-code only: two leading system prompts (provider prompt, environment)
    aborted_final: bool = False  # the last request was aborted: an empty final response (no final answer)


@dataclass(frozen=True)
class TrialInfo:
    """Per-trial facts that the job dir states (rewards, exceptions) plus how it was built."""

    trial_name: str
    instance_id: str
    scaffold: str
    reward: float | None
    exception_type: str | None
    has_litellm: bool
    n_model_calls: int  # successful proxy lines (0 without a log)
    plan: TrialPlan


@dataclass
class GeneratedJob:
    job_dir: Path
    scaffolds: tuple[str, ...]
    trials: list[TrialInfo] = field(default_factory=list)
    truth: dict[str, list[ExpectedConversation]] = field(default_factory=dict)
    bytes_written: int = 0
    # ATIF-only shape trials (tests.support.atif_shapes), kept apart from ``trials`` (the planned trials of the four
    # proxy-log scaffolds that the job's result.json lists); their truth is in ``truth`` too.
    atif_shape_trials: list[TrialInfo] = field(default_factory=list)
    # conversations of the shape trials refused by default: reason -> model turns
    expected_rejects: dict[str, dict[str, int]] = field(default_factory=dict)
    # Model-turn ground truth of every trial (``sft.core.turns``), with the default options: the model
    # turns in its files (successful proxy calls; ATIF model steps, copied context excluded), and the ones a
    # faithful conversion loses, as "<stage>:<reason>" -> turns (all main-agent turns): the title
    # generator's side call, an aborted final response, the shape trials' refused conversations. The rest
    # are the assistant turns of ``truth``: source == truth turns + lost, per trial.
    source_model_turns: dict[str, int] = field(default_factory=dict)
    lost_model_turns: dict[str, dict[str, int]] = field(default_factory=dict)


# ----------------------------------------------------------------------------------------------------
# Small deterministic helpers
# ----------------------------------------------------------------------------------------------------


def _rng(*parts: object) -> random.Random:
    """A Random seeded from a string (str seeds are hashed with sha512: stable across runs)."""
    return random.Random(":".join(str(p) for p in parts))


def _short_id(rng: random.Random, n: int = 7) -> str:
    return "".join(rng.choice(_SHORTUUID_ALPHABET) for _ in range(n))


def _uuid(rng: random.Random) -> str:
    h = f"{rng.getrandbits(128):032x}"
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-a{h[17:20]}-{h[20:32]}"


def _b62(rng: random.Random, n: int) -> str:
    return "".join(rng.choice(string.ascii_letters + string.digits) for _ in range(n))


def _iso(ms: int) -> str:
    moment = datetime.fromtimestamp(ms // 1000, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + f".{ms % 1000:03d}Z"


def _iso_s(ms: int) -> str:
    return datetime.fromtimestamp(ms // 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def trial_name_for(instance_id: str, suffix: str) -> str:
    """Harbor's rule: first 32 characters of the task name, trailing '_'/'-' removed, + '__' + suffix."""
    return f"{instance_id[:32].rstrip('_-')}__{suffix}"


def _tokens(chars: int) -> int:
    return max(1, chars // 4)


# ----------------------------------------------------------------------------------------------------
# Tools per scaffold (OpenAI function form; Anthropic form is derived)
# ----------------------------------------------------------------------------------------------------


def _fn(name: str, description: str, props: dict[str, Any], required: Sequence[str]) -> dict[str, Any]:
    return {
        "type": "function",
        "function": {
            "name": name,
            "description": description,
            "parameters": {"type": "object", "properties": props, "required": list(required)},
        },
    }


_S = {"type": "string"}
CLAUDE_TOOLS: list[dict[str, Any]] = [
    _fn(
        "Task",
        "Launch a new agent to handle complex, multi-step tasks autonomously.",
        {"description": _S, "prompt": _S, "subagent_type": _S},
        ["description", "prompt", "subagent_type"],
    ),
    _fn(
        "Bash",
        "Executes a given bash command in a persistent shell session.",
        {"command": _S, "description": _S},
        ["command"],
    ),
    _fn(
        "Glob",
        "Fast file pattern matching tool that works with any codebase size.",
        {"pattern": _S, "path": _S},
        ["pattern"],
    ),
    _fn(
        "Grep",
        "A powerful search tool built on ripgrep.",
        {
            "pattern": _S,
            "path": _S,
            "output_mode": {"type": "string", "enum": ["content", "files_with_matches", "count"]},
        },
        ["pattern"],
    ),
    _fn(
        "Read",
        "Reads a file from the local filesystem.",
        {"file_path": _S, "offset": {"type": "number"}, "limit": {"type": "number"}},
        ["file_path"],
    ),
    _fn(
        "Edit",
        "Performs exact string replacements in files.",
        {
            "file_path": _S,
            "old_string": _S,
            "new_string": _S,
            "replace_all": {"type": "boolean", "default": False},
        },
        ["file_path", "old_string", "new_string"],
    ),
    _fn(
        "Write",
        "Writes a file to the local filesystem.",
        {"file_path": _S, "content": _S},
        ["file_path", "content"],
    ),
    _fn(
        "TodoWrite",
        "Create and manage a structured task list for your current coding session.",
        {"todos": {"type": "array", "items": {"type": "object"}}},
        ["todos"],
    ),
]
CLAUDE_SUBAGENT_TOOLS: list[dict[str, Any]] = [
    t for t in CLAUDE_TOOLS if t["function"]["name"] in {"Bash", "Glob", "Grep", "Read"}
]
OPENCODE_TOOLS: list[dict[str, Any]] = [
    _fn(
        "bash",
        "Executes a given bash command in a persistent shell session with optional timeout.",
        {"command": _S, "description": _S},
        ["command", "description"],
    ),
    _fn(
        "read",
        "Reads a file from the local filesystem.",
        {"filePath": _S, "offset": {"type": "number"}, "limit": {"type": "number"}},
        ["filePath"],
    ),
    _fn("glob", "Fast file pattern matching tool.", {"pattern": _S, "path": _S}, ["pattern"]),
    _fn("grep", "Fast content search tool.", {"pattern": _S, "path": _S, "include": _S}, ["pattern"]),
    _fn(
        "edit",
        "Performs exact string replacements in files.",
        {"filePath": _S, "oldString": _S, "newString": _S},
        ["filePath", "oldString", "newString"],
    ),
    _fn(
        "write",
        "Writes a file to the local filesystem.",
        {"filePath": _S, "content": _S},
        ["filePath", "content"],
    ),
    _fn(
        "todowrite",
        "Use this tool to create and manage a structured task list.",
        {"todos": {"type": "array", "items": {"type": "object"}}},
        ["todos"],
    ),
]
OPENHANDS_TOOLS: list[dict[str, Any]] = [
    _fn(
        "terminal",
        "Execute a bash command in the terminal within a persistent shell session.",
        {"command": _S, "is_input": {"type": "boolean"}, "timeout": {"type": "number"}},
        ["command"],
    ),
    _fn(
        "file_editor",
        "Custom editing tool for viewing, creating and editing files in plain-text format.",
        {
            "command": {"type": "string", "enum": ["view", "create", "str_replace", "insert", "undo_edit"]},
            "path": _S,
            "old_str": _S,
            "new_str": _S,
            "file_text": _S,
        },
        ["command", "path"],
    ),
    _fn(
        "task_tracker",
        "Track and plan multi-step tasks.",
        {
            "command": {"type": "string", "enum": ["view", "plan"]},
            "task_list": {"type": "array", "items": {"type": "object"}},
        },
        ["command"],
    ),
    _fn(
        "finish", "Signals the completion of the current task or conversation.", {"message": _S}, ["message"]
    ),
]


def _anthropic_tool(tool: dict[str, Any]) -> dict[str, Any]:
    fn = tool["function"]
    return {"name": fn["name"], "description": fn["description"], "input_schema": fn["parameters"]}


# ----------------------------------------------------------------------------------------------------
# Prompts and synthetic content
# ----------------------------------------------------------------------------------------------------

_CLAUDE_SYSTEM = (
    "You are Claude Code, Anthropic's official CLI for Claude.\n\n"
    "You are an interactive CLI tool that helps users with software engineering tasks. Use the "
    "instructions below and the tools available to you to assist the user.\n\n"
    "# Doing tasks\nThe user will primarily request you perform software engineering tasks: solving bugs, "
    "adding new functionality, refactoring code. Read the relevant code before changing it, and verify "
    "your change with the project's tests.\n\n"
    "<env>\nWorking directory: /testbed\nIs directory a git repo: Yes\nPlatform: linux\n</env>\n"
    f"You are powered by the model named {TEACHER_MODEL}."
)
_CLAUDE_SUBAGENT_SYSTEM = (
    "You are a file search specialist for Claude Code, Anthropic's official CLI for Claude. You excel at "
    "thoroughly navigating and exploring codebases.\n\nGuidelines:\n- Use Glob for broad file pattern "
    "matching\n- Use Grep for searching file contents with regex\n- Use Read when you know the specific "
    "file path\n- Return file paths as absolute paths in your final response\n\n"
    "<env>\nWorking directory: /testbed\n</env>"
)
_OPENCODE_SYSTEM = (
    "You are opencode, an interactive CLI tool that helps users with software engineering tasks. Use the "
    "instructions below and the tools available to you to assist the user.\n\n"
    "IMPORTANT: Keep your responses short. Verify your solution with tests when possible.\n\n"
    "Here is some useful information about the environment you are running in:\n<env>\n"
    "  Working directory: /testbed\n  Is directory a git repo: yes\n  Platform: linux\n</env>\n"
    f"You are powered by the model named {TEACHER_MODEL}."
)
# OpenCode's two system prompts (newer OpenCode; it caps system messages at two for prompt caching): its
# provider prompt, then the environment and custom-instructions block.
_OPENCODE_SYSTEM_PARTS = (
    "You are opencode, an interactive CLI tool that helps users with software engineering tasks. Use the "
    "instructions below and the tools available to you to assist the user.\n\n"
    "IMPORTANT: Keep your responses short. Verify your solution with tests when possible.",
    "Here is some useful information about the environment you are running in:\n<env>\n"
    "  Working directory: /testbed\n  Is directory a git repo: yes\n  Platform: linux\n</env>\n"
    "Instructions from: /testbed/AGENTS.md\nRun the module tests before you finish.",
)
# Claude Code attaches reminders like this to the newest turn of a request (claude-code OpenAI-shape churn).
CLAUDE_REMINDER = (
    "<system-reminder>\nThe TodoWrite tool hasn't been used recently. If you're working on tasks that would "
    "benefit from tracking progress, consider using the TodoWrite tool. Ignore this if not applicable.\n"
    "</system-reminder>"
)
_OPENCODE_TITLE_SYSTEM = (
    "You are a title generator. You output ONLY a thread title. Nothing else.\n\n<task>\nGenerate a "
    "brief title that would help the user find this conversation later.\n</task>\n\n<rules>\n- Title "
    "must be ≤50 characters\n- Single line, no explanations\n</rules>"
)
_OPENHANDS_SYSTEM = (
    "You are OpenHands agent, a helpful AI assistant that can interact with a computer to solve tasks.\n\n"
    "<ROLE>\nYour primary role is to assist users by executing commands, modifying code, and solving "
    "technical problems effectively.\n</ROLE>\n\n<EFFICIENCY>\n* Each action you take is somewhat "
    "expensive. Wherever possible, combine multiple actions into a single action.\n</EFFICIENCY>\n\n"
    "<TROUBLESHOOTING>\n* If you've made repeated attempts to solve a problem but tests still fail, step "
    "back and reconsider your approach.\n</TROUBLESHOOTING>"
)
_TERMINUS_PROMPT_HEAD = (
    "You are an AI assistant tasked with solving command-line tasks in a Linux environment. You will be "
    "given a task description and the output from previously executed commands. Your goal is to solve "
    "the task by providing batches of shell commands.\n\nFormat your response as JSON with the following "
    'structure:\n\n{\n  "analysis": "Analyze the current state based on the terminal output provided.",\n'
    '  "plan": "Describe your plan for the next steps.",\n  "commands": [\n    {\n      "keystrokes": '
    '"ls -la\\n",\n      "duration": 0.1\n    }\n  ],\n  "task_complete": true\n}\n\nRequired fields:\n'
    '- "analysis": Your analysis of the current situation\n- "plan": Your plan for the next steps\n'
    '- "commands": Array of command objects to execute\n\n'
)
_TERMINUS_CONFIRM = (
    "Current terminal state:\nNew Terminal Output:\n\nroot@{host}:/testbed# \n\nAre you sure you want to "
    "mark the task as complete? This will trigger your solution to be graded and you won't be able to "
    'make any further corrections. If so, include "task_complete": true in your JSON response again.'
)
_MODULES = ("parser", "core", "utils", "config", "io", "registry")
_FUNCS = ("parse_value", "load_config", "normalize_path", "merge_options", "resolve_alias", "to_bytes")
_CJK_ISSUE = "\n\n补充说明：在处理空字符串时解析器崩溃 🐛。期待的行为是返回空列表 ✅。"
_EMOJI_DONE = " 🎉 测试全部通过。"


@dataclass(frozen=True)
class _Task:
    """The synthetic issue a trial works on."""

    instance_id: str
    pkg: str
    module: str
    func: str
    unicode: bool

    @property
    def path(self) -> str:
        return f"/testbed/{self.pkg}/{self.module}.py"

    @property
    def test_path(self) -> str:
        return f"tests/test_{self.module}.py"

    @property
    def instruction(self) -> str:
        text = (
            f"<issue>\n`{self.func}` in `{self.pkg}/{self.module}.py` raises `IndexError` when it is given an "
            f"empty string.\n\nSteps to reproduce:\n```python\nfrom {self.pkg}.{self.module} import {self.func}\n"
            f"{self.func}('')\n```\nExpected: an empty result, no exception.\n</issue>\n\nResolve the issue in "
            f"the repository at /testbed ({self.instance_id}). Make the minimal change and run the tests."
        )
        return text + (_CJK_ISSUE if self.unicode else "")


def _make_task(instance_id: str, rng: random.Random, unicode: bool) -> _Task:
    repo_part = instance_id.split("__", 1)[-1].rsplit("-", 1)[0]
    pkg = repo_part.replace("-", "_")
    return _Task(instance_id, pkg, rng.choice(_MODULES), rng.choice(_FUNCS), unicode)


def _filler(payload_bytes: int, salt: int) -> str:
    """Padding appended to tool outputs in scale mode (cheap, deterministic, varies by salt)."""
    if payload_bytes <= 0:
        return ""
    line = f"DEBUG worker-{salt % 97:02d} heartbeat ok; queue=0 latency_ms=12 checksum={salt:08x}\n"
    return "\n" + (line * (payload_bytes // len(line) + 1))[:payload_bytes]


def _source_listing(task: _Task, numbered: str) -> str:
    lines = [
        f'"""Helpers of the {task.pkg} package."""',
        "",
        "from __future__ import annotations",
        "",
        "",
        f"def {task.func}(text: str) -> list[str]:",
        '    """Split ``text`` on commas and strip each part."""',
        "    head = text[0]",
        "    parts = [head + text[1:]]",
        "    return [p.strip() for p in ','.join(parts).split(',')]",
    ]
    if numbered == "cat":
        return "\n".join(f"{i:6d}\t{line}" for i, line in enumerate(lines, 1))
    return "<file>\n" + "\n".join(f"{i:05d}| {line}" for i, line in enumerate(lines, 1)) + "\n</file>"


def _pytest_output(task: _Task, passed: bool, unicode: bool) -> str:
    summary = "12 passed in 0.41s" if passed else "1 failed, 11 passed in 0.47s"
    body = (
        "============================= test session starts ==============================\n"
        "platform linux -- Python 3.11.9, pytest-8.3.2, pluggy-1.5.0\nrootdir: /testbed\ncollected 12 items\n\n"
        f"{task.test_path} {'............' if passed else '.....F......'} [100%]\n\n"
    )
    if not passed:
        body += f"FAILED {task.test_path}::test_{task.func}_empty - IndexError: string index out of range\n"
    tail = f"============================== {summary} =============================="
    return body + tail + (" ✓ 通过 🎉" if unicode and passed else "")


# ----------------------------------------------------------------------------------------------------
# Building the canonical conversations of one trial
# ----------------------------------------------------------------------------------------------------


@dataclass
class _Conv:
    """One conversation: canonical messages (system first if any) and its tools."""

    kind: str  # main | subagent | title
    messages: list[Message]
    tools: list[dict[str, Any]]
    agent_id: str | None = None
    system_parts: tuple[str, ...] = ()  # several system prompts (joined with "\n" in messages[0])


@dataclass
class _Trial:
    plan: TrialPlan
    task: _Task
    main: _Conv
    subagent: _Conv | None
    subagent_after: int | None  # index of the main assistant turn whose Task call spawned it
    title: _Conv | None


class _IdGen:
    def __init__(self, rng: random.Random, scaffold: str) -> None:
        self.rng = rng
        self.scaffold = scaffold

    def call_id(self) -> str:
        if self.scaffold == "claude-code":
            return "toolu_01" + _b62(self.rng, 22)
        return "call_" + _b62(self.rng, 24)


def _tool_call(name: str, arguments: dict[str, Any], ids: _IdGen) -> ToolCall:
    return ToolCall(id=ids.call_id(), name=name, arguments=arguments)


# intent -> (tool name, arguments, output) per scaffold
def _action(
    intent: str, scaffold: str, task: _Task, *, passed: bool = True, unicode: bool = False
) -> tuple[str, dict[str, Any], str]:
    rel = task.path.removeprefix("/testbed/")
    grep_hit = f"{rel}:6:def {task.func}(text: str) -> list[str]:\n{task.test_path}:14:    assert {task.func}('a, b') == ['a', 'b']"
    glob_hit = "\n".join(f"/testbed/{task.pkg}/{m}.py" for m in _MODULES)
    old, new = "    head = text[0]", "    if not text:\n        return []\n    head = text[0]"
    if scaffold == "claude-code":
        table: dict[str, tuple[str, dict[str, Any], str]] = {
            "search": (
                "Grep",
                {"pattern": f"def {task.func}", "path": "/testbed", "output_mode": "content"},
                grep_hit,
            ),
            "list": ("Glob", {"pattern": f"{task.pkg}/**/*.py"}, glob_hit),
            "read": ("Read", {"file_path": task.path}, _source_listing(task, "cat")),
            "edit_unread": (
                "Edit",
                {
                    "file_path": f"/testbed/{task.test_path}",
                    "old_string": "pass",
                    "new_string": "assert True",
                },
                TOOL_USE_ERROR,
            ),
            "edit": (
                "Edit",
                {"file_path": task.path, "old_string": old, "new_string": new},
                f"The file {task.path} has been updated successfully.",
            ),
            "test": (
                "Bash",
                {
                    "command": f"cd /testbed && python -m pytest {task.test_path} -q",
                    "description": "Run the module tests",
                },
                _pytest_output(task, passed, unicode),
            ),
        }
    elif scaffold == "open-code":
        table = {
            "search": (
                "grep",
                {"pattern": f"def {task.func}", "path": "/testbed"},
                f"Found 2 matches\n{grep_hit}",
            ),
            "list": ("glob", {"pattern": f"{task.pkg}/**/*.py"}, glob_hit),
            "read": ("read", {"filePath": task.path}, _source_listing(task, "oc")),
            "edit_unread": ("edit", {"oldString": "pass", "newString": "assert True"}, OPENCODE_TOOL_ERROR),
            "edit": (
                "edit",
                {"filePath": task.path, "oldString": old, "newString": new},
                "Edit applied successfully.",
            ),
            "test": (
                "bash",
                {"command": f"python -m pytest {task.test_path} -q", "description": "Runs the module tests"},
                _pytest_output(task, passed, unicode),
            ),
        }
    else:  # openhands-sdk
        table = {
            "search": (
                "terminal",
                {"command": f"grep -rn 'def {task.func}' /testbed --include=*.py"},
                grep_hit,
            ),
            "list": ("terminal", {"command": f"find /testbed/{task.pkg} -name '*.py' | sort"}, glob_hit),
            "read": (
                "file_editor",
                {"command": "view", "path": task.path},
                f"Here's the result of running `cat -n` on {task.path}:\n{_source_listing(task, 'cat')}",
            ),
            "edit_unread": (
                "file_editor",
                {"command": "str_replace", "path": "/testbed/missing.py", "old_str": "pass", "new_str": "x"},
                "ERROR:\nInvalid `path` parameter: /testbed/missing.py. The path does not exist.",
            ),
            "edit": (
                "file_editor",
                {"command": "str_replace", "path": task.path, "old_str": old, "new_str": new},
                f"The file {task.path} has been edited. Review the changes and make sure they are as expected.",
            ),
            "test": (
                "terminal",
                {"command": f"cd /testbed && python -m pytest {task.test_path} -q"},
                _pytest_output(task, passed, unicode),
            ),
        }
    return table[intent]


_NARRATION = {
    "search": "Let me find where `{func}` is defined.",
    "list": "Let me look at the package layout first.",
    "read": "I'll read `{module}.py` to see the current implementation.",
    "edit_unread": "I'll add a regression test.",
    "edit": "The function indexes `text[0]` without checking for an empty string. I'll add a guard.",
    "test": "Now let me run the tests to verify the fix.",
    "task": "I'll use an explore agent to map the package while I look at the issue.",
}
_REASONING = {
    "search": "The issue is about `{func}` failing on empty input. I need to find its definition first.",
    "list": "Before changing anything I want to know which modules exist in `{pkg}`.",
    "read": "Grep found the definition in `{module}.py`; reading it will show why an empty string fails.",
    "edit_unread": "A regression test would help; let me edit the test file directly.",
    "edit": "`head = text[0]` raises IndexError for ''. Returning [] early for empty input is the minimal fix.",
    "test": "The guard is in place; running the module tests will confirm nothing else broke.",
    "task": "The package might be large; delegating the exploration saves context.",
}


def _fmt(template: str, task: _Task) -> str:
    return template.format(func=task.func, module=task.module, pkg=task.pkg)


def _turn_intents(plan: TrialPlan, rng: random.Random) -> list[str]:
    """Tool-turn intents in order; features first so short trials still carry them."""
    n_tool_turns = max(1, plan.n_turns - 1)
    head: list[str] = []
    if plan.subagent and plan.scaffold == "claude-code":
        head.append("task")
    head.append("parallel" if plan.parallel else "search")
    if plan.tool_error and plan.scaffold != "terminus2":
        head.append("edit_unread")
    tail = ["read", "edit", "test"]
    filler_pool = ["search", "list", "read", "test"]
    middle = [rng.choice(filler_pool) for _ in range(max(0, n_tool_turns - len(head) - len(tail)))]
    return (head + middle + tail)[:n_tool_turns]


def _assistant(plan: TrialPlan, task: _Task, intent: str, calls: list[ToolCall], narrate: bool) -> Message:
    key = "search" if intent == "parallel" else intent
    return Message(
        role="assistant",
        content=_fmt(_NARRATION[key], task) if narrate else "",
        reasoning_content=_fmt(_REASONING[key], task) if plan.reasoning else "",
        tool_calls=calls,
    )


def _final_answer(plan: TrialPlan, task: _Task) -> str:
    resolved = (plan.reward or 0.0) > 0
    text = (
        f"I fixed `{task.func}` in `{task.pkg}/{task.module}.py`: it now returns an empty list for an empty "
        "string instead of indexing `text[0]`. "
        + (
            "All 12 module tests pass."
            if resolved
            else "One test still fails; the remaining failure needs more work."
        )
    )
    return text + (_EMOJI_DONE if plan.unicode and resolved else "")


def _tool_turn(
    plan: TrialPlan,
    task: _Task,
    intent: str,
    turn: int,
    ids: _IdGen,
    rng: random.Random,
    payload_bytes: int,
    is_last_test: bool,
) -> tuple[Message, list[Message]]:
    """One assistant tool turn and its tool results (canonical)."""
    scaffold = plan.scaffold
    passed = (plan.reward or 0.0) > 0 or not is_last_test
    intents = ["search", "read"] if intent == "parallel" else [intent]
    if intent == "parallel" and rng.random() < 0.5:
        intents.append("list")
    calls: list[ToolCall] = []
    results: list[Message] = []
    for k, sub_intent in enumerate(intents):
        name, args, output = _action(sub_intent, scaffold, task, passed=passed, unicode=plan.unicode)
        call = _tool_call(name, args, ids)
        calls.append(call)
        is_error = sub_intent == "edit_unread" and scaffold in ("claude-code", "open-code")
        if not is_error and sub_intent in ("read", "test", "search"):
            output += _filler(payload_bytes, turn * 7 + k)
        results.append(Message(role="tool", content=output, tool_call_id=call.id, is_error=is_error))
    narrate = plan.narration and (turn == 0 or rng.random() < 0.6)
    return _assistant(plan, task, intent, calls, narrate), results


def _build_subagent(plan: TrialPlan, task: _Task, ids: _IdGen, prompt: str) -> _Conv:
    """claude-code Task sub-agent: Glob+Grep in parallel, Read, then a report."""
    msgs: list[Message] = [
        Message(role="system", content=_CLAUDE_SUBAGENT_SYSTEM),
        Message(role="user", content=prompt),
    ]
    calls, results = [], []
    for intent in ("list", "search"):
        name, args, output = _action(intent, "claude-code", task)
        call = _tool_call(name, args, ids)
        calls.append(call)
        results.append(Message(role="tool", content=output, tool_call_id=call.id))
    msgs.append(
        Message(
            role="assistant",
            content="",
            reasoning_content="Map the package, then find the function." if plan.reasoning else "",
            tool_calls=calls,
        )
    )
    msgs.extend(results)
    name, args, output = _action("read", "claude-code", task)
    call = _tool_call(name, args, ids)
    msgs.append(
        Message(
            role="assistant",
            content="Reading the definition.",
            reasoning_content="Grep points to one file." if plan.reasoning else "",
            tool_calls=[call],
        )
    )
    msgs.append(Message(role="tool", content=output, tool_call_id=call.id))
    report = (
        f"`{task.func}` is defined in {task.path} (line 6). It reads `text[0]` unconditionally, so an empty "
        f"string raises IndexError. Tests live in /testbed/{task.test_path}."
    )
    msgs.append(
        Message(
            role="assistant",
            content=report,
            reasoning_content="I have what the caller asked for." if plan.reasoning else "",
        )
    )
    return _Conv("subagent", msgs, CLAUDE_SUBAGENT_TOOLS, agent_id="Explore")


def _build_trial(plan: TrialPlan, seed: int, index: int, payload_bytes: int) -> _Trial:
    rng = _rng("trial-content", seed, index, plan.instance_id)
    task = _make_task(plan.instance_id, rng, plan.unicode)
    ids = _IdGen(rng, plan.scaffold)
    if plan.scaffold == "terminus2":
        return _Trial(plan, task, _build_terminus(plan, task, rng, payload_bytes), None, None, None)
    system, tools = {
        "claude-code": (_CLAUDE_SYSTEM, CLAUDE_TOOLS),
        "open-code": (_OPENCODE_SYSTEM, OPENCODE_TOOLS),
        "openhands-sdk": (_OPENHANDS_SYSTEM, OPENHANDS_TOOLS),
    }[plan.scaffold]
    system_parts: tuple[str, ...] = ()
    if plan.two_system and plan.scaffold == "open-code":
        system_parts = _OPENCODE_SYSTEM_PARTS
        system = "\n".join(system_parts)  # sft.rules.validate.SYSTEM_JOIN; Anthropic's text-block join
    msgs: list[Message] = [
        Message(role="system", content=system),
        Message(role="user", content=task.instruction),
    ]
    subagent: _Conv | None = None
    subagent_after: int | None = None
    intents = _turn_intents(plan, rng)
    for turn, intent in enumerate(intents):
        if intent == "task":
            prompt = f"Find where `{task.func}` is defined in /testbed/{task.pkg} and where it is tested. Report file paths and line numbers."
            call = _tool_call(
                "Task",
                {"description": "Explore the package", "prompt": prompt, "subagent_type": "Explore"},
                ids,
            )
            subagent = _build_subagent(plan, task, ids, prompt)
            subagent_after = turn
            msgs.append(_assistant(plan, task, "task", [call], plan.narration))
            msgs.append(Message(role="tool", content=subagent.messages[-1].content, tool_call_id=call.id))
            continue
        is_last_test = turn == len(intents) - 1 and intent == "test"
        assistant, results = _tool_turn(plan, task, intent, turn, ids, rng, payload_bytes, is_last_test)
        msgs.append(assistant)
        msgs.extend(results)
    if plan.exception:
        # Cut mid-run: the last assistant turn's tool call never returned.
        while msgs[-1].role == "tool":
            msgs.pop()
    elif plan.aborted_final:
        msgs.append(Message(role="assistant"))  # the last request was aborted: an empty response
    elif plan.scaffold == "openhands-sdk":
        final = _final_answer(plan, task)
        msgs.append(
            Message(
                role="assistant",
                content="",
                reasoning_content=_fmt(_REASONING["test"], task) if plan.reasoning else "",
                tool_calls=[_tool_call("finish", {"message": final}, ids)],
            )
        )
    else:
        msgs.append(
            Message(
                role="assistant",
                content=_final_answer(plan, task),
                reasoning_content="The fix is verified." if plan.reasoning else "",
            )
        )
    title = None
    if plan.title_call and plan.scaffold == "open-code":
        title = _Conv(
            "title",
            [
                Message(role="system", content=_OPENCODE_TITLE_SYSTEM),
                Message(role="user", content="Generate a title for this conversation:\n"),
                Message(role="user", content=task.instruction),
                Message(role="assistant", content=f"Fix {task.func} crash on empty string"),
            ],
            [],
        )
    main = _Conv("main", msgs, tools, system_parts=system_parts)
    return _Trial(plan, task, main, subagent, subagent_after, title)


def _terminus_response(analysis: str, plan_text: str, commands: list[dict[str, Any]], complete: bool) -> str:
    body: dict[str, Any] = {"analysis": analysis, "plan": plan_text, "commands": commands}
    if complete:
        body["task_complete"] = True
    return orjson.dumps(body, option=orjson.OPT_INDENT_2).decode("utf-8")


def _build_terminus(plan: TrialPlan, task: _Task, rng: random.Random, payload_bytes: int) -> _Conv:
    """terminus-2 text protocol: no system, no tools; JSON text answers; terminal screens as user turns."""
    host = f"{rng.getrandbits(48):012x}"
    prompt = (
        _TERMINUS_PROMPT_HEAD
        + f"Task Description:\n{task.instruction}\n\nCurrent terminal state:\nCurrent Terminal Screen:\nroot@{host}:/testbed# \n"
    )
    msgs: list[Message] = [Message(role="user", content=prompt)]
    rel = task.path.removeprefix("/testbed/")
    steps: list[tuple[str, str, list[str], str]] = [
        (
            "The terminal is empty; I have not looked at the code yet.",
            f"Search for `{task.func}`.",
            [f"grep -rn 'def {task.func}' {task.pkg}/\n"],
            f"{rel}:6:def {task.func}(text: str) -> list[str]:",
        ),
        (
            "I found the definition.",
            "Print the function to see the bug.",
            [f"sed -n '1,12p' {rel}\n"],
            _source_listing(task, "cat"),
        ),
        (
            "`text[0]` fails on ''.",
            "Insert an early return and run the tests.",
            [
                f"sed -i 's/    head = text\\[0\\]/    if not text:\\n        return []\\n    head = text[0]/' {rel}\n",
                f"python -m pytest {task.test_path} -q\n",
            ],
            _pytest_output(task, (plan.reward or 0.0) > 0, plan.unicode),
        ),
    ]
    n_steps = max(1, plan.n_turns - 2)
    while len(steps) < n_steps:
        steps.insert(
            1,
            (
                "Still exploring.",
                "List the package files.",
                [f"ls {task.pkg}/\n"],
                "  ".join(f"{m}.py" for m in _MODULES),
            ),
        )
    steps = steps[:n_steps]
    for analysis, plan_text, keystrokes, output in steps:
        commands = [
            {"keystrokes": k, "duration": 0.1 if k.startswith(("grep", "sed", "ls")) else 1.0}
            for k in keystrokes
        ]
        if plan.parallel and len(commands) == 1:
            commands.append({"keystrokes": "git status --short\n", "duration": 0.1})
            output += "\n M " + rel
        reasoning = f"{analysis} {plan_text}" if plan.reasoning else ""
        msgs.append(
            Message(
                role="assistant",
                content=_terminus_response(analysis, plan_text, commands, False),
                reasoning_content=reasoning,
            )
        )
        screen = "".join(f"root@{host}:/testbed# {c['keystrokes']}" for c in commands)
        msgs.append(
            Message(
                role="user",
                content=f"New Terminal Output:\n\n{screen}{output}{_filler(payload_bytes, len(msgs))}\nroot@{host}:/testbed# ",
            )
        )
    done = _final_answer(plan, task)
    msgs.append(
        Message(
            role="assistant",
            content=_terminus_response(done, "The task is complete.", [], True),
            reasoning_content="Tests ran; I am done." if plan.reasoning else "",
        )
    )
    msgs.append(Message(role="user", content=_TERMINUS_CONFIRM.format(host=host)))
    msgs.append(
        Message(
            role="assistant",
            content=_terminus_response("Confirmed, the fix is in place.", "No further action.", [], True),
            reasoning_content="Confirming completion." if plan.reasoning else "",
        )
    )
    if plan.exception:
        # Timed out before finishing: drop the completion exchange and the unanswered terminal screen.
        del msgs[-3:]
        if len(msgs) > 2:
            msgs.pop()
    return _Conv("main", msgs, [])


# ----------------------------------------------------------------------------------------------------
# Rendering messages to the proxy-log shapes (with serialised-fragment caching)
# ----------------------------------------------------------------------------------------------------


def _openai_message(msg: Message, scaffold: str) -> dict[str, Any]:
    if msg.role in ("system", "user"):
        return {"role": msg.role, "content": msg.content}
    if msg.role == "tool":
        return {"role": "tool", "tool_call_id": msg.tool_call_id, "content": msg.content}
    out: dict[str, Any] = {"role": "assistant", "content": msg.content or None}
    if msg.reasoning_content:
        out["reasoning_content"] = msg.reasoning_content
    if msg.tool_calls:
        out["tool_calls"] = [
            {
                "id": c.id,
                "type": "function",
                "function": {"name": c.name, "arguments": orjson.dumps(c.arguments).decode("utf-8")},
            }
            for c in msg.tool_calls
        ]
    return out


def _signature(text: str) -> str:
    """Stable per thinking text, so a request replays exactly the signature the response carried."""
    return hashlib.sha512(text.encode("utf-8")).hexdigest()[:96]


def _anthropic_assistant_blocks(msg: Message) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    if msg.reasoning_content:
        blocks.append(
            {
                "type": "thinking",
                "thinking": msg.reasoning_content,
                "signature": _signature(msg.reasoning_content),
            }
        )
    if msg.content:
        blocks.append({"type": "text", "text": msg.content})
    blocks.extend(
        {"type": "tool_use", "id": c.id, "name": c.name, "input": c.arguments} for c in msg.tool_calls
    )
    return blocks


def _anthropic_messages(messages: list[Message]) -> tuple[list[dict[str, Any]], list[int]]:
    """Canonical (no system) -> Anthropic messages; also the canonical end index of each Anthropic message."""
    out: list[dict[str, Any]] = []
    ends: list[int] = []
    for i, msg in enumerate(messages):
        if msg.role == "tool":
            block: dict[str, Any] = {
                "type": "tool_result",
                "tool_use_id": msg.tool_call_id,
                "content": msg.content,
            }
            if msg.is_error:
                block["is_error"] = True
            if out and out[-1]["role"] == "user" and out[-1]["content"][0]["type"] == "tool_result":
                out[-1]["content"].append(block)
                ends[-1] = i + 1
                continue
            out.append({"role": "user", "content": [block]})
        elif msg.role == "user":
            out.append({"role": "user", "content": [{"type": "text", "text": msg.content}]})
        else:
            out.append({"role": "assistant", "content": _anthropic_assistant_blocks(msg)})
        ends.append(i + 1)
    return out, ends


def _with_cache_control(message: dict[str, Any]) -> dict[str, Any]:
    blocks = [dict(b) for b in message["content"]]
    blocks[-1]["cache_control"] = {"type": "ephemeral"}
    return {"role": message["role"], "content": blocks}


class _Renderer:
    """Serialises each message once; a request is the join of the first k fragments."""

    def __init__(self, conv: _Conv, scaffold: str, anthropic: bool, churn: bool = False) -> None:
        self.conv = conv
        self.anthropic = anthropic
        self.churn = churn  # claude-code through the proxy's OpenAI translation (see TrialPlan.proxy_shape)
        body = conv.messages[1:] if conv.messages and conv.messages[0].role == "system" else conv.messages
        self.offset = len(conv.messages) - len(body)
        if anthropic:
            self.wire, ends = _anthropic_messages(body)
            self.end_to_wire = {end + self.offset: k + 1 for k, end in enumerate(ends)}
            self.frags = [orjson.dumps(m) for m in self.wire]
        else:
            self.wire = [_openai_message(m, scaffold) for m in conv.messages]
            self.end_to_wire = {i: i for i in range(len(conv.messages) + 1)}
            self.frags = [orjson.dumps(m) for m in self.wire]

    def request_fragment(self, n_canonical: int, billing: str = "") -> tuple[orjson.Fragment, int]:
        """Wire messages covering canonical messages[:n_canonical] and their total size in bytes."""
        k = self.end_to_wire[n_canonical]
        parts = self.frags[:k]
        if self.anthropic and k:
            parts = parts[:-1] + [orjson.dumps(_with_cache_control(self.wire[k - 1]))]
        elif not self.anthropic and self.offset:
            system = self._openai_system(billing)
            if self.churn and k > 1:  # the newest message as text parts, cache_control on the last one
                newest = dict(self.wire[k - 1])
                newest["content"] = _text_parts(newest["content"], CLAUDE_REMINDER)
                parts = parts[:-1] + [orjson.dumps(newest)]
            if system is not None:
                parts = system + parts[1:]
        blob = b"[" + b",".join(parts) + b"]"
        return orjson.Fragment(blob), len(blob)

    def _openai_system(self, billing: str) -> list[bytes] | None:
        """The system message(s) when they are not the plain string: OpenCode's two system messages, or the
        claude-code system prompt as text parts after a per-request billing part."""
        if self.conv.system_parts:
            return [orjson.dumps({"role": "system", "content": text}) for text in self.conv.system_parts]
        if self.churn:
            content = [{"type": "text", "text": billing}, *_text_parts(self.conv.messages[0].content)]
            return [orjson.dumps({"role": "system", "content": content})]
        return None


def _text_parts(text: str, *more: str) -> list[dict[str, Any]]:
    """``text`` (and ``more``) as OpenAI text parts, cache_control on the last one (the proxy's translation of
    Anthropic blocks)."""
    parts: list[dict[str, Any]] = [{"type": "text", "text": t} for t in (text, *more)]
    parts[-1]["cache_control"] = {"type": "ephemeral"}
    return parts


# ----------------------------------------------------------------------------------------------------
# The model-call schedule and proxy log lines
# ----------------------------------------------------------------------------------------------------


@dataclass
class _Call:
    conv: _Conv
    renderer: _Renderer
    assistant_index: int  # index in conv.messages of the response
    request_time: int
    duration_ms: int
    success: bool = True
    write_order: int = 0
    billing: str = ""  # claude-code: the system billing block text of this call
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0


def _assistant_indices(conv: _Conv) -> list[int]:
    return [i for i, m in enumerate(conv.messages) if m.role == "assistant"]


def _schedule(
    trial: _Trial, renderers: dict[str, _Renderer], start_ms: int, rng: random.Random
) -> list[_Call]:
    """Chronological model calls (failed attempts included), with request times and durations."""
    calls: list[_Call] = []
    clock = start_ms + rng.randint(2_000, 9_000)
    main_turns = _assistant_indices(trial.main)
    fail_at = min(1, len(main_turns) - 1) if trial.plan.failed_retry else None
    for turn, idx in enumerate(main_turns):
        if fail_at == turn:
            calls.append(
                _Call(trial.main, renderers["main"], idx, clock, 30_000 + rng.randint(0, 999), success=False)
            )
            clock += calls[-1].duration_ms + rng.randint(1_000, 4_000)
        duration = rng.randint(1_500, 12_000)
        calls.append(_Call(trial.main, renderers["main"], idx, clock, duration))
        if turn == 0 and trial.title is not None:
            # Started right after the first main call, finished (and logged) before it.
            calls.append(_Call(trial.title, renderers["title"], 3, clock + 40, 700))
        clock += duration + rng.randint(200, 6_000)
        if trial.subagent is not None and turn == trial.subagent_after:
            for sub_idx in _assistant_indices(trial.subagent):
                sub_duration = rng.randint(1_000, 6_000)
                calls.append(_Call(trial.subagent, renderers["subagent"], sub_idx, clock, sub_duration))
                clock += sub_duration + rng.randint(100, 2_000)
    for order, call in enumerate(
        sorted(calls, key=lambda c: (c.request_time + c.duration_ms, c.request_time))
    ):
        call.write_order = order
    return calls


def _usage_block(
    call: _Call, request_bytes: int, response_chars: int, anthropic: bool, prev_prompt: int
) -> dict[str, Any]:
    call.prompt_tokens = _tokens(request_bytes)
    call.completion_tokens = _tokens(response_chars) + 8
    call.cached_tokens = min(prev_prompt, call.prompt_tokens)
    usage: dict[str, Any] = {
        "prompt_tokens": call.prompt_tokens,
        "completion_tokens": call.completion_tokens,
        "total_tokens": call.prompt_tokens + call.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": call.cached_tokens},
        "completion_tokens_details": {"reasoning_tokens": 0},
        "cost": 0.0,
    }
    if anthropic:
        usage["cache_creation_input_tokens"] = call.prompt_tokens - call.cached_tokens
        usage["cache_read_input_tokens"] = call.cached_tokens
    return usage


def _openai_response(call: _Call, rng: random.Random, scaffold: str, usage: dict[str, Any]) -> dict[str, Any]:
    msg = call.conv.messages[call.assistant_index]
    return {
        "id": "chatcmpl-" + _b62(rng, 29),
        "object": "chat.completion",
        "created": call.request_time // 1000 + call.duration_ms // 1000,
        "model": TEACHER_MODEL,
        "choices": [
            {
                "index": 0,
                "finish_reason": "tool_calls" if msg.tool_calls else "stop",
                "message": _openai_message(msg, scaffold),
            }
        ],
        "usage": usage,
    }


def _anthropic_response(call: _Call, rng: random.Random, usage: dict[str, Any]) -> dict[str, Any]:
    msg = call.conv.messages[call.assistant_index]
    return {
        "id": "msg_" + _b62(rng, 24),
        "type": "message",
        "role": "assistant",
        "model": TEACHER_MODEL,
        "content": _anthropic_assistant_blocks(msg),
        "stop_reason": "tool_use" if msg.tool_calls else "end_turn",
        "stop_sequence": None,
        "usage": {
            "input_tokens": usage["prompt_tokens"]
            - usage["cache_read_input_tokens"]
            - usage["cache_creation_input_tokens"],
            "output_tokens": usage["completion_tokens"],
            "cache_creation_input_tokens": usage["cache_creation_input_tokens"],
            "cache_read_input_tokens": usage["cache_read_input_tokens"],
        },
    }


def _billing_block(rng: random.Random) -> str:
    return f"x-anthropic-billing-header: cc_version={AGENT_VERSION['claude-code']}.{rng.getrandbits(12):03x}; cc_entrypoint=sdk-cli; cch={rng.getrandbits(20):05x};"


def _request_body(
    call: _Call, trial: _Trial, messages: orjson.Fragment, rng: random.Random, session_uuid: str
) -> dict[str, Any]:
    conv = call.conv
    if call.renderer.anthropic:
        if call.billing:
            system = [{"type": "text", "text": call.billing}, *_text_parts(conv.messages[0].content)]
        else:
            system = _text_parts(*(conv.system_parts or (conv.messages[0].content,)))
        body: dict[str, Any] = {
            "model": TEACHER_MODEL,
            "max_tokens": 32000,
            "system": system,
            "messages": messages,
            "tools": [_anthropic_tool(t) for t in conv.tools],
        }
        if call.billing:  # claude-code's session metadata
            user_id = f"user_{session_uuid.replace('-', '')}_account__session_{session_uuid}"
            body["metadata"] = {"user_id": user_id}
        body.update({"temperature": 1, "stream": True})
        if trial.plan.reasoning:
            body["thinking"] = {"type": "enabled", "budget_tokens": 31999}
        return body
    body = {"model": TEACHER_MODEL, "messages": messages}
    if conv.tools:
        body["tools"] = conv.tools
        body["tool_choice"] = "auto"
    if trial.plan.scaffold == "claude-code":
        body.update({"max_tokens": 32000, "temperature": 1, "stream": True})
    elif trial.plan.scaffold == "openhands-sdk":
        body.update({"max_tokens": 64000, "temperature": 0.7, "top_p": 0.95})
    elif trial.plan.scaffold == "open-code":
        body.update({"max_tokens": 32000, "temperature": 0.55, "top_p": 1, "stream": True})
    else:
        body.update({"temperature": 0.7})
    return body


def _log_line(
    call: _Call, trial: _Trial, trial_route: str, rng: random.Random, session_uuid: str, prev_prompt: int
) -> bytes:
    n_request = call.assistant_index
    if trial.plan.scaffold == "claude-code":
        call.billing = _billing_block(rng)
    fragment, request_bytes = call.renderer.request_fragment(n_request, call.billing)
    request_body = _request_body(call, trial, fragment, rng, session_uuid)
    line: dict[str, Any] = {
        "session_id": trial.plan.instance_id,
        "success": call.success,
        "request_time": call.request_time,
        "timestamp": _iso(call.request_time),
        "duration_ms": call.duration_ms,
        "request_body": request_body,
    }
    if not call.success:
        line["failure"] = {
            "error_type": "Timeout",
            "status_code": 504,
            "message": "litellm.Timeout: Connection timed out after 30.0 seconds.",
        }
        line["response_body"] = None
        line["usage"] = None
    else:
        msg = call.conv.messages[call.assistant_index]
        response_chars = (
            len(msg.content)
            + len(msg.reasoning_content)
            + sum(len(orjson.dumps(c.arguments)) for c in msg.tool_calls)
        )
        usage = _usage_block(call, request_bytes, response_chars, call.renderer.anthropic, prev_prompt)
        line["response_body"] = (
            _anthropic_response(call, rng, usage)
            if call.renderer.anthropic
            else _openai_response(call, rng, trial.plan.scaffold, usage)
        )
        line["usage"] = usage
    line["trajectory_route"] = trial_route
    return orjson.dumps(line) + b"\n"


# ----------------------------------------------------------------------------------------------------
# ATIF documents per scaffold
# ----------------------------------------------------------------------------------------------------


def _atif_tool_calls(msg: Message, claude: bool) -> list[dict[str, Any]]:
    out = []
    for c in msg.tool_calls:
        item: dict[str, Any] = {"tool_call_id": c.id, "function_name": c.name, "arguments": c.arguments}
        if claude:
            item["extra"] = {"raw_arguments": c.arguments, "tool_use_name": c.name}
        out.append(item)
    return out


def _claude_observation(result: Message) -> dict[str, Any]:
    """Harbor's claude-code converter appends toolUseResult data; the raw result sits in extra."""
    suffix = "\n[error] tool reported failure" if result.is_error else '\n[metadata] {"durationMs": 12}'
    raw = {
        "type": "tool_result",
        "tool_use_id": result.tool_call_id,
        "content": result.content,
        "is_error": result.is_error,
    }
    return {
        "source_call_id": result.tool_call_id,
        "content": result.content + suffix,
        "extra": {
            "tool_result_metadata": {
                "raw_tool_result": raw,
                "tool_use_result": {"stdout": result.content, "stderr": "", "interrupted": False},
            }
        },
    }


def _agent_steps_for(
    conv: _Conv, calls_by_index: dict[int, _Call], scaffold: str, extra: dict[str, Any] | None
) -> list[dict[str, Any]]:
    """One agent step per assistant message (claude-code / opencode); observations from the tool results."""
    steps: list[dict[str, Any]] = []
    msgs = conv.messages
    for i, msg in enumerate(msgs):
        if msg.role == "user":
            step: dict[str, Any] = {"source": "user", "message": msg.content}
            if extra:
                step["extra"] = dict(extra)
            steps.append(step)
            continue
        if msg.role != "assistant":
            continue
        steps.append(_agent_step(msgs, i, calls_by_index.get(i), scaffold, extra))
    return steps


def _observation_results(msgs: list[Message], start: int, scaffold: str) -> list[dict[str, Any]]:
    """The ATIF observation results of the tool messages from ``start`` on."""
    results = []
    j = start
    while j < len(msgs) and msgs[j].role == "tool":
        if scaffold == "claude-code":
            results.append(_claude_observation(msgs[j]))
        else:
            results.append({"source_call_id": msgs[j].tool_call_id, "content": msgs[j].content})
        j += 1
    return results


def _agent_step(
    msgs: list[Message], i: int, call: _Call | None, scaffold: str, extra: dict[str, Any] | None
) -> dict[str, Any]:
    """The agent step of assistant message ``i``, its observation made of the tool messages after it."""
    msg = msgs[i]
    step: dict[str, Any] = {"source": "agent", "model_name": TEACHER_MODEL, "message": msg.content}
    if call is not None:
        step["timestamp"] = _iso(call.request_time + call.duration_ms)
    if msg.reasoning_content:
        step["reasoning_content"] = msg.reasoning_content
    if msg.tool_calls:
        step["tool_calls"] = _atif_tool_calls(msg, scaffold == "claude-code")
    results = _observation_results(msgs, i + 1, scaffold)
    if results:
        step["observation"] = {"results": results}
    if call is not None:
        metrics: dict[str, Any] = {
            "prompt_tokens": call.prompt_tokens,
            "completion_tokens": call.completion_tokens,
            "cached_tokens": call.cached_tokens,
        }
        if scaffold == "open-code":
            metrics["extra"] = {"reasoning_tokens": 0, "cache_write_tokens": 0}
        step["metrics"] = metrics
    if scaffold == "open-code":
        step["llm_call_count"] = 1
    if extra is not None:
        step["extra"] = dict(extra)
    return step


def _final_metrics(calls: Iterable[_Call], n_steps: int) -> dict[str, Any]:
    ok = [c for c in calls if c.success]
    return {
        "total_prompt_tokens": sum(c.prompt_tokens for c in ok),
        "total_completion_tokens": sum(c.completion_tokens for c in ok),
        "total_cached_tokens": sum(c.cached_tokens for c in ok),
        "total_steps": n_steps,
    }


def _number_steps(steps: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"step_id": k, **s} for k, s in enumerate(steps, 1)]


def _atif_claude(trial: _Trial, calls: list[_Call], session_uuid: str) -> dict[str, Any]:
    main_calls = {c.assistant_index: c for c in calls if c.conv is trial.main and c.success}
    base_extra = {"is_sidechain": False, "cwd": "/testbed", "user_type": "external"}
    steps = _agent_steps_for(trial.main, main_calls, "claude-code", base_extra)
    if trial.subagent is not None and trial.subagent_after is not None:
        sub_calls = {c.assistant_index: c for c in calls if c.conv is trial.subagent and c.success}
        sub_steps = _agent_steps_for(
            trial.subagent,
            sub_calls,
            "claude-code",
            {"is_sidechain": True, "agent_id": "a1b2c3d", "cwd": "/testbed", "user_type": "external"},
        )
        # Sidechain steps come right after the main step holding the Task call (time order).
        agent_seen, insert_at = -1, len(steps)
        for k, step in enumerate(steps):
            if step["source"] == "agent":
                agent_seen += 1
                if agent_seen == trial.subagent_after:
                    insert_at = k + 1
                    break
        steps = steps[:insert_at] + sub_steps + steps[insert_at:]
    return {
        "schema_version": ATIF_VERSION["claude-code"],
        "session_id": session_uuid,
        "agent": {
            "name": "claude-code",
            "version": AGENT_VERSION["claude-code"],
            "model_name": TEACHER_MODEL,
        },
        "steps": _number_steps(steps),
        "final_metrics": _final_metrics(calls, len(steps)),
    }


def _atif_opencode(trial: _Trial, calls: list[_Call], session_uuid: str) -> dict[str, Any]:
    main_calls = {c.assistant_index: c for c in calls if c.conv is trial.main and c.success}
    steps = _agent_steps_for(trial.main, main_calls, "open-code", None)
    return {
        "schema_version": ATIF_VERSION["open-code"],
        "session_id": "ses_" + session_uuid.replace("-", "")[:26],
        "agent": {"name": "opencode", "version": AGENT_VERSION["open-code"], "model_name": MODEL_STRING},
        "steps": _number_steps(steps),
        "final_metrics": _final_metrics(calls, len(steps)),
    }


def _atif_openhands(trial: _Trial, calls: list[_Call], session_uuid: str) -> dict[str, Any]:
    """openhands-sdk: one agent step per action (message ""), observations overwrite the step before."""
    msgs = trial.main.messages
    steps: list[dict[str, Any]] = [
        {"source": "system", "message": msgs[0].content},
        {"source": "user", "message": msgs[1].content},
    ]
    for msg in msgs[2:]:
        if msg.role == "assistant":
            if msg.content and not msg.tool_calls:
                steps.append({"source": "agent", "message": msg.content})
            for c in msg.tool_calls:
                steps.append(
                    {
                        "source": "agent",
                        "message": "",
                        "tool_calls": [
                            {"tool_call_id": c.id, "function_name": c.name, "arguments": c.arguments}
                        ],
                    }
                )
        elif msg.role == "tool":
            # Overwrites: with parallel calls only the last observation survives (on the last action step).
            steps[-1]["observation"] = {
                "results": [{"source_call_id": msg.tool_call_id, "content": msg.content}]
            }
    return {
        "schema_version": ATIF_VERSION["openhands-sdk"],
        "session_id": session_uuid,
        "agent": {
            "name": "openhands-sdk",
            "version": "unknown",
            "model_name": MODEL_STRING,
            "tool_definitions": trial.main.tools,
        },
        "steps": _number_steps(steps),
        "final_metrics": _final_metrics(calls, len(steps)),
    }


def _atif_terminus(trial: _Trial, calls: list[_Call], session_uuid: str) -> dict[str, Any]:
    """terminus-2 with raw_content=true: message = raw response; observation = the next prompt."""
    msgs = trial.main.messages
    by_index = {c.assistant_index: c for c in calls if c.success}
    steps: list[dict[str, Any]] = [{"source": "user", "message": msgs[0].content}]
    for i, msg in enumerate(msgs):
        if msg.role != "assistant":
            continue
        step: dict[str, Any] = {"source": "agent", "model_name": TEACHER_MODEL, "message": msg.content}
        if msg.reasoning_content:
            step["reasoning_content"] = msg.reasoning_content
        next_prompt = (
            msgs[i + 1].content if i + 1 < len(msgs) else "New Terminal Output:\n\nroot@testbed:/testbed# "
        )
        step["observation"] = {"results": [{"content": next_prompt}]}
        call = by_index.get(i)
        if call is not None:
            step["metrics"] = {
                "prompt_tokens": call.prompt_tokens,
                "completion_tokens": call.completion_tokens,
                "cached_tokens": call.cached_tokens,
            }
        steps.append(step)
    return {
        "schema_version": ATIF_VERSION["terminus2"],
        "session_id": session_uuid,
        "agent": {
            "name": "terminus-2",
            "version": AGENT_VERSION["terminus2"],
            "model_name": MODEL_STRING,
            "extra": {"parser": "json", "raw_content": True},
        },
        "steps": _number_steps(steps),
        "final_metrics": _final_metrics(calls, len(steps)),
    }


_ATIF_BUILDERS: dict[str, Callable[[_Trial, list[_Call], str], dict[str, Any]]] = {
    "claude-code": _atif_claude,
    "open-code": _atif_opencode,
    "openhands-sdk": _atif_openhands,
    "terminus2": _atif_terminus,
}


# ----------------------------------------------------------------------------------------------------
# Truth
# ----------------------------------------------------------------------------------------------------


def _truth_from_log(conv: _Conv, last_call: _Call | None, agent_type: AgentType) -> ExpectedConversation:
    messages = (
        [m.model_copy(deep=True) for m in conv.messages[: last_call.assistant_index + 1]]
        if last_call
        else list(conv.messages)
    )
    if last_call is not None and last_call.billing and messages and messages[0].role == "system":
        messages[0] = messages[0].model_copy(
            update={"content": f"{last_call.billing}\n{messages[0].content}"}
        )
    if last_call is not None and last_call.renderer.churn:
        # the last request's newest message carried the reminder part (earlier copies did not)
        newest = messages[last_call.assistant_index - 1]
        messages[last_call.assistant_index - 1] = newest.model_copy(
            update={"content": f"{newest.content}\n{CLAUDE_REMINDER}"}
        )
    if (
        messages
        and messages[-1].role == "assistant"
        and not (messages[-1].content or messages[-1].reasoning_content or messages[-1].tool_calls)
    ):
        # an aborted final response: the pipeline trims back to the last complete turn (repair
        # trimmed_aborted_final_turn), then the trailing results
        messages.pop()
        while messages and messages[-1].role in ("tool", "user"):
            messages.pop()
    return ExpectedConversation(messages, [dict(t) for t in conv.tools], agent_type, conv.agent_id, "litellm")


def _truth_from_atif(conv: _Conv, scaffold: str) -> ExpectedConversation:
    """What the scaffold's ATIF holds: opencode/terminus-2 have no system prompt and no tools.

    Only those two scaffolds are generated without a proxy log: their ATIF is verbatim, while the
    claude-code and openhands-sdk ATIF are lossy projections with no single faithful reading.
    """
    if scaffold not in ("open-code", "terminus2"):
        raise ValueError(f"ATIF-only truth is defined for open-code and terminus2, not scaffold={scaffold!r}")
    messages = [m.model_copy(deep=True) for m in conv.messages if m.role != "system"]
    return ExpectedConversation(messages, [], "main", None, "atif")


def _trial_truth(trial: _Trial, calls: list[_Call]) -> list[ExpectedConversation]:
    scaffold = trial.plan.scaffold
    if scaffold == "terminus2" or trial.plan.atif_only:
        return [_truth_from_atif(trial.main, scaffold)]

    def last_ok(conv: _Conv) -> _Call | None:
        ok = [c for c in calls if c.conv is conv and c.success]
        return max(ok, key=lambda c: c.request_time) if ok else None

    out = [_truth_from_log(trial.main, last_ok(trial.main), "main")]
    if trial.subagent is not None:
        out.append(_truth_from_log(trial.subagent, last_ok(trial.subagent), "subagent"))
    return out


# ----------------------------------------------------------------------------------------------------
# Writing files
# ----------------------------------------------------------------------------------------------------


class _Writer:
    """Atomic file writes that count bytes."""

    def __init__(self) -> None:
        self.bytes_written = 0

    def json(self, path: Path, obj: Any) -> None:
        self.bytes(path, orjson.dumps(obj, option=_JSON_OPTS | orjson.OPT_APPEND_NEWLINE))

    def bytes(self, path: Path, data: bytes) -> None:
        with atomic_writer(path, "wb") as handle:
            handle.write(data)
        self.bytes_written += len(data)

    def stream(self, path: Path, chunks: Iterable[bytes]) -> None:
        with atomic_writer(path, "wb") as handle:
            self._drain(handle, chunks)

    def _drain(self, handle: IO[bytes], chunks: Iterable[bytes]) -> None:
        for chunk in chunks:
            handle.write(chunk)
            self.bytes_written += len(chunk)


def _log_lines(
    trial: _Trial, calls: list[_Call], route: str, rng: random.Random, session_uuid: str
) -> Iterable[bytes]:
    """Lines in the order the proxy appended them (completion order); usage is filled as a side effect.

    Rendered in request order (cache accounting), emitted as soon as every earlier-completing line is out,
    so only the few out-of-order lines are ever buffered.
    """
    prev_prompt: dict[int, int] = {}
    pending: dict[int, bytes] = {}
    next_out = 0
    for call in sorted(calls, key=lambda c: c.request_time):
        key = id(call.conv)
        pending[call.write_order] = _log_line(call, trial, route, rng, session_uuid, prev_prompt.get(key, 0))
        if call.success:
            prev_prompt[key] = call.prompt_tokens
        while next_out in pending:
            yield pending.pop(next_out)
            next_out += 1


def _agent_config(plan: TrialPlan) -> dict[str, Any]:
    kwargs: dict[str, Any] = {}
    if plan.scaffold == "terminus2":
        kwargs = {"trajectory_config": {"raw_content": True, "linear_history": True}}
    return {"name": _harbor_agent(plan.scaffold), "model_name": MODEL_STRING, "kwargs": kwargs}


def _harbor_agent(scaffold: str) -> str:
    """Harbor's agent name for a scaffold (ATIF shape trials already use Harbor's name)."""
    return HARBOR_AGENT_NAME.get(scaffold, scaffold)


def _trial_config(plan: TrialPlan, trial_name: str, job_name: str, job_id: str) -> dict[str, Any]:
    """TrialConfig as 0.25.0 writes it (fields at their default omitted)."""
    return {
        "task": {"path": f"datasets/{DATASET}/{plan.instance_id}", "source": DATASET},
        "trial_name": trial_name,
        "trials_dir": f"jobs/{job_name}",
        "agent": _agent_config(plan),
        "environment": {"type": "docker"},
        "job_id": job_id,
    }


def _trial_result(
    plan: TrialPlan,
    trial_name: str,
    job_name: str,
    job_id: str,
    calls: list[_Call],
    start_ms: int,
    end_ms: int,
    rng: random.Random,
) -> dict[str, Any]:
    ok = [c for c in calls if c.success]
    n_in = sum(c.prompt_tokens for c in ok)
    n_cache = sum(c.cached_tokens for c in ok)
    n_out = sum(c.completion_tokens for c in ok)
    usage = {"n_input_tokens": n_in, "n_cache_tokens": n_cache, "n_output_tokens": n_out, "cost_usd": None}
    exception_info = None
    if plan.exception:
        exception_info = {
            "exception_type": plan.exception,
            "exception_message": "Agent execution timed out after 1800.0 seconds",
            "exception_traceback": f'Traceback (most recent call last):\n  File "harbor/trial/trial.py", line 212, in _run_agent\n    await asyncio.wait_for(...)\nharbor.trial.errors.{plan.exception}: Agent execution timed out after 1800.0 seconds\n',
            "occurred_at": _iso_s(end_ms - 60_000),
        }
    task_path = f"datasets/{DATASET}/{plan.instance_id}"
    agent_start, agent_end = start_ms + 50_000, end_ms - 60_000
    return {
        "id": _uuid(rng),
        "task_name": plan.instance_id,
        "trial_name": trial_name,
        "trial_uri": f"file:///home/trajgen/artifacts/jobs/{job_name}/{trial_name}",
        "task_id": {"path": task_path},
        "source": DATASET,
        "task_checksum": hashlib.sha256(plan.instance_id.encode("utf-8")).hexdigest(),
        "config": {
            "task": {
                "path": task_path,
                "git_url": None,
                "git_commit_id": None,
                "name": None,
                "ref": None,
                "overwrite": False,
                "download_dir": None,
                "source": DATASET,
            },
            "trial_name": trial_name,
            "trials_dir": f"jobs/{job_name}",
            "timeout_multiplier": 1.0,
            "agent": {
                **_agent_config(plan),
                "import_path": None,
                "override_timeout_sec": None,
                "mcp_servers": [],
                "skills": [],
            },
            "environment": {"type": "docker", "force_build": False, "delete": True, "kwargs": {}},
            "verifier": {"override_timeout_sec": None, "max_timeout_sec": None, "disable": False},
            "artifacts": [],
            "job_id": job_id,
        },
        "agent_info": {
            "name": _harbor_agent(plan.scaffold),
            "version": AGENT_VERSION.get(plan.scaffold, "1.0.0"),
            "model_info": {"name": TEACHER_MODEL, "provider": "openai"},
        },
        "agent_result": {
            **usage,
            "model_usage": {TEACHER_MODEL: dict(usage)} if ok else None,
            "rollout_details": None,
            "metadata": None,
        },
        "verifier_result": {"rewards": {"reward": plan.reward}} if plan.reward is not None else None,
        "verifier_environment_mode": "shared",
        "exception_info": exception_info,
        "started_at": _iso_s(start_ms),
        "finished_at": _iso_s(end_ms),
        "environment_setup": {"started_at": _iso_s(start_ms), "finished_at": _iso_s(start_ms + 20_000)},
        "agent_setup": {"started_at": _iso_s(start_ms + 20_000), "finished_at": _iso_s(agent_start)},
        "agent_execution": {"started_at": _iso_s(agent_start), "finished_at": _iso_s(agent_end)},
        "verifier": {"started_at": _iso_s(agent_end), "finished_at": _iso_s(end_ms - 1_000)},
        "step_results": None,
    }


def _write_trial(
    job_dir: Path,
    job_name: str,
    job_id: str,
    plan: TrialPlan,
    index: int,
    seed: int,
    payload_bytes: int,
    writer: _Writer,
) -> tuple[TrialInfo, list[ExpectedConversation], dict[str, int]]:
    rng = _rng("trial-meta", seed, index, plan.instance_id)
    trial_name = trial_name_for(plan.instance_id, _short_id(rng))
    session_uuid = _uuid(rng)
    start_ms = int((_EPOCH_BASE + timedelta(days=seed % 365, minutes=7 * index)).timestamp() * 1000)
    trial = _build_trial(plan, seed, index, payload_bytes)
    log_rng = _rng("trial-log", seed, index)
    anthropic = plan.proxy_shape == "anthropic" or (not plan.proxy_shape and plan.scaffold == "claude-code")
    churn = plan.scaffold == "claude-code" and not anthropic
    renderers = {"main": _Renderer(trial.main, plan.scaffold, anthropic, churn)}
    if trial.subagent is not None:
        renderers["subagent"] = _Renderer(trial.subagent, plan.scaffold, anthropic, churn)
    if trial.title is not None:
        renderers["title"] = _Renderer(trial.title, plan.scaffold, False)
    calls = _schedule(trial, renderers, start_ms + 50_000, log_rng)
    trial_dir = job_dir / trial_name
    agent_dir = trial_dir / "agent"
    route = f"{job_name}/{trial_name}"
    # The log is rendered even for ATIF-only trials: it fills the usage numbers the ATIF metrics carry.
    lines = _log_lines(trial, calls, route, log_rng, session_uuid)
    if plan.atif_only:
        for _ in lines:
            pass
    else:
        writer.stream(agent_dir / "litellm-trajectory.jsonl", lines)
    writer.json(agent_dir / "trajectory.json", _ATIF_BUILDERS[plan.scaffold](trial, calls, session_uuid))
    end_ms = max(c.request_time + c.duration_ms for c in calls) + 90_000
    writer.json(trial_dir / "config.json", _trial_config(plan, trial_name, job_name, job_id))
    writer.json(
        trial_dir / "result.json",
        _trial_result(plan, trial_name, job_name, job_id, calls, start_ms, end_ms, rng),
    )
    if plan.reward is not None:
        writer.bytes(trial_dir / "verifier" / "reward.txt", f"{int(plan.reward)}\n".encode())
        writer.bytes(
            trial_dir / "verifier" / "test-stdout.txt",
            _pytest_output(trial.task, plan.reward > 0, False).encode("utf-8") + b"\n",
        )
    if plan.exception:
        writer.bytes(
            trial_dir / "exception.txt",
            f"harbor.trial.errors.{plan.exception}: Agent execution timed out after 1800.0 seconds\n".encode(),
        )
    ok = [c for c in calls if c.success]
    info = TrialInfo(
        trial_name,
        plan.instance_id,
        plan.scaffold,
        plan.reward,
        plan.exception,
        not plan.atif_only,
        0 if plan.atif_only else len(ok),
        plan,
    )
    totals = {
        "in": sum(c.prompt_tokens for c in ok),
        "cache": sum(c.cached_tokens for c in ok),
        "out": sum(c.completion_tokens for c in ok),
    }
    return info, _trial_truth(trial, calls), totals


def _model_turn_truth(job: GeneratedJob, info: TrialInfo, truth: list[ExpectedConversation]) -> None:
    """``GeneratedJob.source_model_turns`` / ``lost_model_turns`` of a planned trial (checked to add up).

    With a proxy log every successful call is a model turn: the true conversations' assistant turns, the
    title generator's call (``extract:side_call``) and an aborted final response, which the repair
    ``trimmed_aborted_final_turn`` removes (``repair:aborted_empty_response``). An ATIF-only trial's file
    holds exactly its true conversation's turns.
    """
    kept = sum(m.role == "assistant" for conv in truth for m in conv.messages)
    lost: dict[str, int] = {}
    if info.has_litellm and info.plan.title_call and info.plan.scaffold == "open-code":
        lost["extract:side_call"] = 1
    if info.has_litellm and info.plan.aborted_final:
        lost["repair:aborted_empty_response"] = 1
    source = info.n_model_calls if info.has_litellm else kept
    if source != kept + sum(lost.values()):
        raise AssertionError(
            f"generator: trial {info.trial_name}: {source} model turns in its files, but "
            f"{kept} in its truth + {lost} lost"
        )
    job.source_model_turns[info.trial_name] = source
    job.lost_model_turns[info.trial_name] = lost


def _job_result(
    job_id: str, infos: list[TrialInfo], totals: dict[str, int], seed: int, n_minutes: int
) -> dict[str, Any]:
    evals: dict[str, Any] = {}
    for info in infos:
        key = f"{_harbor_agent(info.scaffold)}__{TEACHER_MODEL}__{DATASET}"
        entry = evals.setdefault(
            key,
            {
                "n_trials": 0,
                "n_errors": 0,
                "metrics": [],
                "pass_at_k": {},
                "reward_stats": {"reward": {}},
                "exception_stats": {},
            },
        )
        if info.reward is not None:
            entry["n_trials"] += 1
            entry["reward_stats"]["reward"].setdefault(f"{float(info.reward)}", []).append(info.trial_name)
        if info.exception_type:
            entry["n_errors"] += 1
            entry["exception_stats"].setdefault(info.exception_type, []).append(info.trial_name)
    for entry in evals.values():
        values = [float(v) for v, names in entry["reward_stats"]["reward"].items() for _ in names]
        entry["metrics"] = [{"mean": round(sum(values) / len(values), 6) if values else 0.0}]
    started = _EPOCH_BASE + timedelta(days=seed % 365)
    finished = started + timedelta(minutes=n_minutes)
    return {
        "id": job_id,
        "started_at": started.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "updated_at": finished.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "finished_at": finished.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "n_total_trials": len(infos),
        "stats": {
            "n_completed_trials": len(infos),
            "n_errored_trials": sum(1 for i in infos if i.exception_type),
            "n_running_trials": 0,
            "n_pending_trials": 0,
            "n_cancelled_trials": 0,
            "n_retries": 0,
            "evals": evals,
            "n_input_tokens": totals["in"],
            "n_cache_tokens": totals["cache"],
            "n_output_tokens": totals["out"],
            "cost_usd": None,
        },
    }


def _write_atif_shape_trial(
    job: GeneratedJob, job_name: str, job_id: str, shape: AtifShape, index: int, seed: int, writer: _Writer
) -> None:
    """One ATIF-only trial of ``tests.support.atif_shapes`` with Harbor-shaped config.json / result.json."""
    plan = TrialPlan(shape.agent_name, f"acme__widgets-{900 + index}", shape.source_turns, atif_only=True)
    rng = _rng("atif-shape", seed, index, shape.key)
    trial_name = trial_name_for(plan.instance_id, _short_id(rng))
    trial_dir = job.job_dir / trial_name
    for name, doc in shape.files.items():
        writer.json(trial_dir / "agent" / name, doc)
    start_ms = int((_EPOCH_BASE + timedelta(days=seed % 365, hours=20, minutes=7 * index)).timestamp() * 1000)
    writer.json(trial_dir / "config.json", _trial_config(plan, trial_name, job_name, job_id))
    writer.json(
        trial_dir / "result.json",
        _trial_result(plan, trial_name, job_name, job_id, [], start_ms, start_ms + 600_000, rng),
    )
    writer.bytes(trial_dir / "verifier" / "reward.txt", b"1\n")
    job.atif_shape_trials.append(
        TrialInfo(trial_name, plan.instance_id, shape.agent_name, 1.0, None, False, 0, plan)
    )
    job.truth[trial_name] = [
        ExpectedConversation(messages, [], agent_type, agent_id, "atif")  # type: ignore[arg-type]
        for agent_type, agent_id, messages in shape.expected
    ]
    job.expected_rejects[trial_name] = dict(shape.rejected)
    job.source_model_turns[trial_name] = shape.source_turns
    job.lost_model_turns[trial_name] = {f"parse:{reason}": n for reason, n in shape.rejected.items()}


def _write_job(
    out_dir: Path,
    plans: Sequence[TrialPlan],
    *,
    seed: int,
    payload_bytes: int,
    with_truth: bool,
    atif_shapes: bool = False,
) -> GeneratedJob:
    out_dir = Path(out_dir)
    job_name = out_dir.name
    job_id = _uuid(_rng("job-id", seed, job_name))
    writer = _Writer()
    scaffolds = tuple(dict.fromkeys(p.scaffold for p in plans))
    job = GeneratedJob(out_dir, scaffolds)
    totals = {"in": 0, "cache": 0, "out": 0}
    log_lines: list[str] = []
    for index, plan in enumerate(plans):
        info, truth, trial_totals = _write_trial(
            out_dir, job_name, job_id, plan, index, seed, payload_bytes, writer
        )
        job.trials.append(info)
        if with_truth:
            job.truth[info.trial_name] = truth
        _model_turn_truth(job, info, truth)
        for k in totals:
            totals[k] += trial_totals[k]
        log_lines.append(
            f"Trial {info.trial_name} completed (reward={info.reward}, exception={info.exception_type})"
        )
    if atif_shapes:  # after the planned trials, so their bytes do not change
        for index, shape in enumerate(
            all_atif_shapes(_make_task("acme__widgets-900", _rng("atif-task", seed), False).instruction)
        ):
            _write_atif_shape_trial(job, job_name, job_id, shape, index, seed, writer)
            log_lines.append(
                f"Trial {job.atif_shape_trials[-1].trial_name} completed (reward=1.0, exception=None)"
            )
    agents = [_agent_config(p) for p in {p.scaffold: p for p in plans}.values()]
    writer.json(
        out_dir / "config.json",
        {
            "job_name": job_name,
            "jobs_dir": "jobs",
            "n_attempts": 1,
            "orchestrator": {"n_concurrent_trials": 4},
            "agents": agents,
            "datasets": [{"path": f"datasets/{DATASET}"}],
        },
    )
    writer.json(out_dir / "result.json", _job_result(job_id, job.trials, totals, seed, 7 * len(plans) + 30))
    writer.bytes(out_dir / "job.log", ("\n".join(log_lines) + "\n").encode("utf-8"))
    job.bytes_written = writer.bytes_written
    return job


# ----------------------------------------------------------------------------------------------------
# Plans and public entry points
# ----------------------------------------------------------------------------------------------------


def _random_plans(
    n_trials: int, seed: int, max_turns: int, scaffolds: Sequence[str], openai_proxy_every: int = 8
) -> list[TrialPlan]:
    """Varied plans: each feature appears at a fixed rate, so big jobs hold every case many times.

    ``openai_proxy_every``: one claude-code trial in that many (by index) is logged in the proxy's OpenAI
    translation (header churn, billing part, reminders), the rest in the Anthropic shape.
    """
    rng = _rng("plans", seed)
    plans = []
    min_turns = min(max_turns, 4)
    for i in range(n_trials):
        scaffold = scaffolds[i % len(scaffolds)]
        owner, repo = REPOS[i % len(REPOS)]
        exception = "AgentTimeoutError" if i % 17 == 11 else None
        plans.append(
            TrialPlan(
                scaffold=scaffold,
                instance_id=f"{owner}__{repo}-{1000 + 37 * i + rng.randint(0, 36)}",
                n_turns=rng.randint(min_turns, max_turns),
                reward=1.0 if rng.random() < 0.65 else 0.0,
                exception=exception,
                reasoning=rng.random() < 0.8,
                parallel=rng.random() < 0.4,
                narration=rng.random() < 0.7,
                unicode=rng.random() < 0.2,
                tool_error=scaffold in ("claude-code", "open-code") and rng.random() < 0.3,
                failed_retry=rng.random() < 0.1,
                subagent=scaffold == "claude-code" and rng.random() < 0.5,
                # by index, not by rng: the earlier features of a seed stay as they were
                title_call=scaffold == "open-code" and i % 12 != 9,  # its title call is OpenAI-shaped
                atif_only=scaffold == "open-code" and i % 23 == 19,
                proxy_shape=(
                    "openai"
                    if scaffold == "claude-code" and i % openai_proxy_every == openai_proxy_every // 2
                    else "anthropic"
                    if scaffold == "open-code" and i % 12 == 9
                    else ""
                ),
                two_system=scaffold == "open-code" and (i % 8 == 5 or i % 12 == 9),
                aborted_final=exception is None
                and i % 13 == 7
                and scaffold != "terminus2"
                and not (scaffold == "open-code" and i % 23 == 19),
            )
        )
    return plans


def generate_job(
    out_dir: Path,
    *,
    n_trials: int = 12,
    seed: int = 0,
    max_turns: int = 8,
    scaffolds: Sequence[str] = SCAFFOLDS,
    payload_bytes: int = 0,
    with_truth: bool = True,
    openai_proxy_every: int = 8,
) -> GeneratedJob:
    """Write one job dir with ``n_trials`` trials (scaffolds assigned round-robin) and return its truth.

    ``with_truth=False`` keeps memory flat for multi-GB benchmark jobs (truth holds every message).
    ``openai_proxy_every``: one claude-code trial in that many is in the proxy's OpenAI shape (the default 8
    keeps the outputs of existing seeds as they were; ``scaffolds=("claude-code",), openai_proxy_every=2``
    is a claude-code job with both proxy-log shapes in equal parts, as the benchmarks' ``cc`` shape).
    """
    unknown = [s for s in scaffolds if s not in SCAFFOLDS]
    if unknown or not scaffolds:
        raise ValueError(
            f"generate_job: scaffolds={list(scaffolds)!r} invalid; choose from {list(SCAFFOLDS)}"
        )
    if n_trials < 1 or not 2 <= max_turns <= 200 or payload_bytes < 0 or openai_proxy_every < 1:
        raise ValueError(
            f"generate_job: n_trials={n_trials}, max_turns={max_turns}, payload_bytes={payload_bytes}, "
            f"openai_proxy_every={openai_proxy_every}: need n_trials >= 1, 2 <= max_turns <= 200, "
            "payload_bytes >= 0, openai_proxy_every >= 1"
        )
    return _write_job(
        Path(out_dir),
        _random_plans(n_trials, seed, max_turns, scaffolds, openai_proxy_every),
        seed=seed,
        payload_bytes=payload_bytes,
        with_truth=with_truth,
    )


def demo_plans() -> dict[str, list[TrialPlan]]:
    """The 16 hand-picked demo trials, grouped into one job per scaffold (see the module docstring): the
    first 12, then the real-world proxy-log shapes (``_real_world_demo_plans``) at the end of each group, so
    the earlier trials keep their names and bytes."""
    plans = _base_demo_plans()
    for scaffold, extra in _real_world_demo_plans().items():
        plans[scaffold] = plans[scaffold] + extra
    return plans


def _real_world_demo_plans() -> dict[str, list[TrialPlan]]:
    """Proxy-log shapes that real jobs hold and the first 12 trials did not (issue 13)."""
    return {
        # the proxy's OpenAI translation: string-vs-parts churn, moving cache_control, billing part, reminder
        "claude-code": [
            TrialPlan(
                "claude-code",
                "acme__widgets-91",
                5,
                reward=1.0,
                proxy_shape="openai",
                subagent=True,
                tool_error=True,
            ),
        ],
        # two leading system prompts in both proxy-log shapes; aborted final requests in both shapes
        "open-code": [
            TrialPlan("open-code", "nimbus__cloud-kit-64", 4, reward=1.0, title_call=True, two_system=True),
            TrialPlan(
                "open-code",
                "octo__toolkit-95",
                4,
                reward=1.0,
                proxy_shape="anthropic",
                two_system=True,
                aborted_final=True,
            ),
        ],
        "openhands-sdk": [TrialPlan("openhands-sdk", "acme__widgets-133", 4, reward=1.0, aborted_final=True)],
    }


def _base_demo_plans() -> dict[str, list[TrialPlan]]:
    return {
        "claude-code": [
            TrialPlan(
                "claude-code",
                "django__django-11099",
                7,
                reward=1.0,
                subagent=True,
                parallel=True,
                tool_error=True,
            ),
            TrialPlan("claude-code", "acme__widgets-17", 5, reward=1.0, failed_retry=True, unicode=True),
            TrialPlan("claude-code", "octo__toolkit-3", 4, reward=0.0, reasoning=False, narration=False),
        ],
        "open-code": [
            TrialPlan(
                "open-code",
                "acme__widgets-42",
                6,
                reward=1.0,
                title_call=True,
                parallel=True,
                tool_error=True,
            ),
            TrialPlan("open-code", "astropy__astropy-12907", 4, reward=1.0, title_call=True, unicode=True),
            TrialPlan("open-code", "octo__toolkit-8", 4, reward=1.0, title_call=True, atif_only=True),
        ],
        "openhands-sdk": [
            TrialPlan("openhands-sdk", "nimbus__cloud-kit-205", 5, reward=1.0, parallel=True),
            TrialPlan("openhands-sdk", "acme__widgets-58", 4, reward=1.0, exception="AgentTimeoutError"),
            TrialPlan(
                "openhands-sdk",
                "nimbus-platform__cloud-kit-extensions-1234",
                4,
                reward=0.0,
                failed_retry=True,
                narration=False,
            ),
        ],
        "terminus2": [
            TrialPlan("terminus2", "octo__toolkit-21", 4, reward=1.0, unicode=True, parallel=True),
            TrialPlan("terminus2", "acme__widgets-77", 3, reward=0.0),
            TrialPlan("terminus2", "sympy__sympy-20590", 4, reward=1.0, reasoning=False),
        ],
    }


def generate_demo_job(out_dir: Path, *, seed: int = 0) -> GeneratedJob:
    """Write the bundled demo: the 16 demo trials of all four scaffolds in one (multi-agent) job, then the
    ATIF-only shape trials."""
    # the first 12 first, so that adding trials never renames the earlier ones (trial names derive from the index)
    plans = [plan for group in _base_demo_plans().values() for plan in group]
    plans += [plan for group in _real_world_demo_plans().values() for plan in group]
    return _write_job(Path(out_dir), plans, seed=seed, payload_bytes=0, with_truth=True, atif_shapes=True)


def generate_demo_jobs(root: Path, *, seed: int = 0) -> dict[str, GeneratedJob]:
    """Write the bundled demo: one small job per scaffold under ``root/<scaffold>``."""
    root = Path(root)
    return {
        scaffold: _write_job(root / scaffold, plans, seed=seed, payload_bytes=0, with_truth=True)
        for scaffold, plans in demo_plans().items()
    }


def payload_for_target(target_bytes: int, n_trials: int, max_turns: int) -> int:
    """Padding per tool output so that a job of ``n_trials`` reaches about ``target_bytes`` on disk.

    The cumulative log repeats each padded output in every later request: with T turns a trial carries
    about T*(T+1)/2 copies of the padding (averaged over the random turn counts and output kinds).
    """
    mean_turns = max(2.0, (min(max_turns, 4) + max_turns) / 2)
    copies_per_trial = 1.2 * mean_turns * (mean_turns + 1) / 2
    return max(0, int(target_bytes / max(1.0, n_trials * copies_per_trial)))


__all__ = [
    "SCAFFOLDS",
    "EXCLUDED_REPOS",
    "KEPT_REPOS",
    "ExpectedConversation",
    "GeneratedJob",
    "TrialInfo",
    "TrialPlan",
    "demo_plans",
    "generate_demo_job",
    "generate_demo_jobs",
    "generate_job",
    "payload_for_target",
    "trial_name_for",
]
