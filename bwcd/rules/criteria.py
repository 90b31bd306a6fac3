# -*- test-case-name: tests.test_criteria -*-
"""
Validating rule criteria and matching them against a trigger payload
(st2common/validators/api/reactor.py and st2reactor/rules/filter.py).

Matching, as st2 does it:

  - criteria are ANDed in their written order and evaluation stops at the
    first one that does not hold;
  - a rule with criteria never matches an empty or falsy payload;
  - a criterion without C{type} simply does not match;
  - a string pattern is rendered with Jinja against the lookup context; if
    it contains C{{{ ... }}} the expression is first given C{| to_complex}
    and the result JSON-decoded, so C{"{{ trigger.n }}"} stays an integer
    (when that decoding fails the plain rendering is used);
  - an exception while rendering a pattern, resolving a key or running an
    operator means no match, and the returned L{MatchResult} carries st2's
    C{failure_reason} for the failed rule enforcement.

Nothing here does I/O: key-value data a pattern may use (C{st2kv},
C{system}) is passed in through C{context}.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from typing import Any, Callable, Dict, Mapping, Optional, Tuple, Union

from attrs import frozen

from bwcd.rules import operators
from bwcd.rules.operators import Now, resolveNow
from bwcd.rules.payload import Getter, compileLookup
from bwcd.rules.templating import renderTemplate

__all__ = [
    "CriteriaError",
    "MatchResult",
    "CompiledCriterion",
    "CompiledCriteria",
    "RenderFunction",
    "validateCriteria",
    "compileCriteria",
    "renderPattern",
    "evaluate",
    "CriterionVerdict",
    "checkEach",
]

# render(templateSource, context) -> rendered text
RenderFunction = Callable[[str, Mapping[str, Any]], str]


class CriteriaError(ValueError):
    """
    Criteria rejected at rule creation (the API answers 400 with this text).
    """


def validateCriteria(criteria: Any) -> None:
    """
    Check criteria as st2 does when a rule is created or updated.

    The operator name must be an exact, case-sensitive key of the operator
    table, and a pattern is required even for C{exists}/C{nexists}
    (StackStorm/st2#6197).

    Beyond st2: a regex pattern without a template (also in a C{search}
    child) is compiled now, so one RE2 cannot take is refused with a message
    naming it instead of failing every enforcement later.

    @raise CriteriaError: with st2's message.
    """
    if not isinstance(criteria, Mapping):
        raise CriteriaError("Criteria should be a dict.")
    for key, criterion in criteria.items():
        if not isinstance(criterion, Mapping):
            raise CriteriaError("Operator not specified for field: %s" % (key,))
        operator = criterion.get("type")
        if operator is None:
            raise CriteriaError("Operator not specified for field: %s" % (key,))
        if not isinstance(operator, str) or operator not in operators.OPERATORS:
            raise CriteriaError(
                "For field: %s, operator %s not in list of allowed operators: %s"
                % (key, operator, list(operators.ALLOWED_OPERATORS))
            )
        if criterion.get("pattern") is None:
            raise CriteriaError(
                "For field: %s, no pattern specified for operator %s" % (key, operator)
            )
        _checkRegexes(key, criterion)


def _checkRegexes(key: str, criterion: Mapping[str, Any]) -> None:
    operator = criterion.get("type")
    if not isinstance(operator, str):
        return
    lowered = operator.lower()
    pattern = criterion.get("pattern")
    if lowered in operators.REGEX_OPERATORS:
        if isinstance(pattern, str) and _isLiteral(pattern):
            try:
                operators.compileRegex(pattern, **operators.REGEX_OPERATORS[lowered])
            except operators.RegexError as e:
                raise CriteriaError("For field: %s, %s" % (key, e)) from None
    elif lowered == operators.SEARCH and isinstance(pattern, Mapping):
        for childKey, child in pattern.items():
            if isinstance(child, Mapping):
                _checkRegexes("%s.%s" % (key, childKey), child)


@frozen
class MatchResult:
    """
    Outcome of matching one rule against one trigger instance.

    @ivar failure_reason: set when an error (not a mere mismatch) stopped
        the match; the caller records a failed rule enforcement with it.
    """

    matched: bool
    failure_reason: Optional[str] = None


MATCHED = MatchResult(True)
NOT_MATCHED = MatchResult(False)

_PLAIN, _TIMEDIFF, _SEARCH, _UNKNOWN, _NO_TYPE = range(5)


@frozen
class CompiledCriterion:
    """
    One criterion with its key lookup and operator resolved in advance.
    """

    key: str
    operator: Any
    kind: int
    function: Optional[Callable[..., bool]]
    pattern: Any
    literal: bool
    condition: Any
    getter: Getter


@frozen
class CompiledCriteria:
    """
    A rule's criteria prepared once, for evaluation against many payloads.
    """

    criteria: Tuple[CompiledCriterion, ...]


def _failingGetter(error: Exception) -> Getter:
    def get(context: Any) -> Any:
        raise error.with_traceback(None)

    return get


def _isLiteral(pattern: Any) -> bool:
    # True when Jinja would give the string back unchanged: no markers, and
    # nothing Jinja normalises (\r\n line ends, one trailing newline).
    if not isinstance(pattern, str):
        return True
    return not (
        "{{" in pattern or "{%" in pattern or "{#" in pattern
        or "\r" in pattern or pattern.endswith("\n")
    )


def _compileOne(key: str, criterion: Any) -> CompiledCriterion:
    try:
        getter = compileLookup(key)
    except Exception as e:
        getter = _failingGetter(e)
    if not isinstance(criterion, Mapping) or "type" not in criterion:
        return CompiledCriterion(key, None, _NO_TYPE, None, None, True, None, getter)
    operator = criterion["type"]
    pattern = criterion.get("pattern")
    condition = criterion.get("condition")
    try:
        function = operators.getOperator(operator)
    except operators.UnknownOperatorError:
        return CompiledCriterion(key, operator, _UNKNOWN, None, pattern, _isLiteral(pattern),
                                 condition, getter)
    lowered = operator.lower()
    if lowered == operators.SEARCH:
        kind = _SEARCH
    elif lowered in operators.TIMEDIFF_OPERATORS:
        kind = _TIMEDIFF
    else:
        kind = _PLAIN
    return CompiledCriterion(key, operator, kind, function, pattern, _isLiteral(pattern),
                             condition, getter)


def compileCriteria(criteria: Mapping[str, Any]) -> CompiledCriteria:
    """
    Prepare criteria once per rule: parse each key's JSONPath and resolve
    each operator, so matching a trigger instance does neither.  Problems
    (a malformed key, an unknown operator) are kept and reported when the
    criteria are evaluated, as st2 does.
    """
    return CompiledCriteria(tuple(_compileOne(key, c) for key, c in criteria.items()))


# st2's MATCH_CRITERIA: "{{ expr }}" becomes "{{expr | to_complex}}".
_MATCH_CRITERIA = re.compile(r"({{)\s*(.*)\s*(}})")


@lru_cache(maxsize=2048)
def _complexForm(pattern: str) -> Optional[str]:
    if _MATCH_CRITERIA.search(pattern) is None:
        return None
    return _MATCH_CRITERIA.sub(r"\1\2 | to_complex\3", pattern)


def renderPattern(pattern: Any, context: Mapping[str, Any],
                  render: RenderFunction = renderTemplate) -> Any:
    """
    Render a criteria pattern, keeping the type of a C{{{ expr }}} result.

    C{None} and non-string patterns are returned unchanged.

    @raise Exception: whatever rendering raises.
    """
    if not isinstance(pattern, str):
        return pattern
    complexForm = _complexForm(pattern)
    if complexForm is not None:
        try:
            return json.loads(render(complexForm, context))
        except ValueError:
            pass
    return render(pattern, context)


class _LazyNow:
    """
    The evaluation's current time, read at most once, and only if a
    timediff operator needs it.
    """

    __slots__ = ("_now", "_value")

    def __init__(self, now: Now) -> None:
        self._now = now
        self._value = None

    def __call__(self) -> Any:
        if self._value is None:
            self._value = resolveNow(self._now)
        return self._value


class _Evaluation:
    __slots__ = ("ruleRef", "instanceId", "render", "now", "extra", "failure", "cause")

    def __init__(self, ruleRef: str, instanceId: str, render: RenderFunction, now: Now,
                 extra: Optional[Mapping[str, Any]]) -> None:
        self.ruleRef = ruleRef
        self.instanceId = instanceId
        self.render = render
        self.now = _LazyNow(now)
        self.extra = extra
        self.failure: Optional[str] = None
        self.cause: Optional[str] = None

    def fail(self, reason: str, error: BaseException) -> None:
        # The first error explains the outcome; st2 writes one failed
        # enforcement per error, but a criterion stops at its first.
        if self.failure is None:
            self.cause = "%s: %s" % (reason, error)
            self.failure = 'Failed to match rule "%s" against trigger instance "%s": %s: %s' % (
                self.ruleRef, self.instanceId, reason, error)

    def check(self, criterion: CompiledCriterion, context: Mapping[str, Any],
              seen: Optional[Dict[str, Any]] = None) -> bool:
        # seen (explanations only): receives the rendered pattern and the
        # value found, as far as the check got.
        if criterion.kind == _NO_TYPE:
            return False
        pattern = criterion.pattern
        if not criterion.literal:
            try:
                pattern = renderPattern(pattern, context, self.render)
            except Exception as e:
                self.fail('Failed to render pattern value "%s" for key "%s"'
                          % (criterion.pattern, criterion.key), e)
                return False
        if seen is not None:
            seen["pattern"] = pattern
        try:
            value = criterion.getter(context)
        except Exception as e:
            self.fail("Failed transforming criteria key %s" % (criterion.key,), e)
            return False
        if seen is not None:
            seen["value"] = value
        try:
            kind = criterion.kind
            if kind == _PLAIN:
                return bool(criterion.function(value, pattern))
            if kind == _TIMEDIFF:
                return bool(criterion.function(value, pattern, self.now))
            if kind == _SEARCH:
                before = self.failure
                result = operators.search(value, pattern, criterion.condition, self.checkChild)
                if result:
                    # Errors in children that did not decide the outcome are
                    # not the reason for anything.
                    self.failure = before
                return bool(result)
            raise operators.UnknownOperatorError("Invalid operator: %s" % (criterion.operator,))
        except Exception as e:
            self.fail("There might be a problem with the criteria in rule %s" % (self.ruleRef,), e)
            return False

    def checkChild(self, key: str, criterion: Mapping[str, Any], itemContext: Mapping[str, Any]) -> bool:
        context = itemContext if not self.extra else {**self.extra, **itemContext}
        return self.check(_compileOne(key, criterion), context)


def evaluate(rule_ref: str, instance_id: str,
             criteria: Union[Mapping[str, Any], CompiledCriteria], payload: Any,
             render: Optional[RenderFunction] = None, now: Now = None, *,
             context: Optional[Mapping[str, Any]] = None) -> MatchResult:
    """
    Match a rule's criteria against one trigger instance's payload.

    @param criteria: the rule's criteria, or L{compileCriteria}'s result
        for them (faster when the rule is matched repeatedly).
    @param render: C{render(source, context) -> str} renders one Jinja
        template; defaults to L{bwcd.rules.templating.renderTemplate}.
    @param now: the current time for the timediff operators: an aware or
        UTC-naive datetime, epoch seconds, or a callable returning either;
        it is read at most once.
    @param context: extra names for keys and patterns (for example
        C{st2kv} or C{system} key-value data); C{trigger} is the payload.
    @return: C{MatchResult(matched, failure_reason)}.  C{failure_reason} is
        C{Failed to match rule "<ref>" against trigger instance "<id>":
        <reason>: <exception>} when an error stopped the match.
    """
    compiled = criteria if isinstance(criteria, CompiledCriteria) else compileCriteria(criteria)
    if not compiled.criteria:
        return MATCHED
    if not payload:
        return NOT_MATCHED
    if context:
        lookupContext = dict(context)
        lookupContext["trigger"] = payload
    else:
        lookupContext = {"trigger": payload}
    evaluation = _Evaluation(rule_ref, instance_id, render or renderTemplate, now, context)
    for criterion in compiled.criteria:
        if not evaluation.check(criterion, lookupContext):
            if evaluation.failure is None:
                return NOT_MATCHED
            return MatchResult(False, evaluation.failure)
    return MATCHED



@frozen
class CriterionVerdict:
    """
    One criterion checked on its own, for explaining a match to a person.

    @ivar pattern: the pattern as written.
    @ivar rendered: the pattern as the operator saw it (rendered when it is
        a template); C{None} when rendering failed.
    @ivar value: what the key found in the payload (C{None} when nothing,
        or when the check stopped before the lookup).
    @ivar reached: how far the check got: C{"start"} (no operator),
        C{"pattern"} (the pattern was rendered) or C{"value"} (the key was
        looked up too).
    @ivar error: the reason and exception, when an error decided the
        verdict.
    """

    key: str
    operator: Any
    pattern: Any
    condition: Any
    rendered: Any
    value: Any
    reached: str
    matched: bool
    error: Optional[str] = None


def checkEach(rule_ref: str, instance_id: str,
              criteria: Union[Mapping[str, Any], CompiledCriteria], payload: Any,
              render: Optional[RenderFunction] = None, now: Now = None, *,
              context: Optional[Mapping[str, Any]] = None) -> Tuple[CriterionVerdict, ...]:
    """
    Check every criterion on its own, none skipped, with the same steps as
    L{evaluate} (which stops at the first one that does not hold): what a
    person needs to see why a rule did or did not match.  The rule matches
    when L{evaluate} says so; with a non-empty payload that is when every
    verdict here holds.
    """
    compiled = criteria if isinstance(criteria, CompiledCriteria) else compileCriteria(criteria)
    lookupContext = dict(context or {})
    lookupContext["trigger"] = payload
    verdicts = []
    for criterion in compiled.criteria:
        evaluation = _Evaluation(rule_ref, instance_id, render or renderTemplate, now, context)
        seen: Dict[str, Any] = {}
        matched = evaluation.check(criterion, lookupContext, seen)
        reached = "value" if "value" in seen else "pattern" if "pattern" in seen else "start"
        verdicts.append(CriterionVerdict(
            criterion.key, criterion.operator, criterion.pattern, criterion.condition,
            seen.get("pattern"), seen.get("value"), reached, matched, evaluation.cause))
    return tuple(verdicts)
