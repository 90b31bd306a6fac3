"""
Tests for L{bwcd.rules.templating}: the sandboxed Jinja environment, its filters,
parameter rendering with dependencies, and casts.
"""

import shlex
import subprocess

from jinja2.exceptions import SecurityError, TemplateSyntaxError, UndefinedError
from twisted.trial.unittest import SynchronousTestCase

from bwcd.rules import filters, templating
from bwcd.rules.templating import (
    FILTERS,
    NONE_MAGIC_VALUE,
    ParameterRenderError,
    castValue,
    isTemplate,
    renderParameters,
    renderTemplate,
    renderValue,
)


def render(source, **context):
    return renderTemplate(source, context)


class EnvironmentTests(SynchronousTestCase):
    """
    The environment's settings: strict undefined, block trimming, sandbox.
    """

    def test_strictUndefined(self):
        """
        An unknown name or attribute raises instead of rendering empty.
        """
        error = self.assertRaises(UndefinedError, render, "{{ missing }}")
        self.assertEqual(str(error), "'missing' is undefined")
        error = self.assertRaises(UndefinedError, render, "{{ trigger.nope }}", trigger={})
        self.assertEqual(str(error), "'dict object' has no attribute 'nope'")

    def test_blocksTrimmed(self):
        """
        trim_blocks and lstrip_blocks remove block lines' whitespace.
        """
        source = "  {% if flag %}\nyes\n  {% endif %}\nend"
        self.assertEqual(render(source, flag=True), "yes\nend")

    def test_dictRendersAsPythonRepr(self):
        """
        A dict renders as its Python repr, not JSON, as in st2.
        """
        self.assertEqual(render("{{ body }}", body={"name": "st2", "ok": True}),
                         "{'name': 'st2', 'ok': True}")
        self.assertEqual(render("{{ items }}", items=["a", None]), "['a', None]")

    def test_inTest(self):
        """
        The `in` test is available.
        """
        self.assertEqual(render("{{ 'a' is in ['a', 'b'] }}/{{ 'c' is in ['a'] }}"), "True/False")

    def test_builtinFilters(self):
        """
        Jinja's own filters stay available.
        """
        self.assertEqual(render("{{ name | upper }}-{{ xs | join(',') }}", name="x", xs=[1, 2]), "X-1,2")

    def test_sandboxRefusesDunderAttributes(self):
        """
        Reaching Python internals through attributes is refused.
        """
        for source in [
            "{{ ''.__class__.__mro__ }}",
            "{{ ''.__class__.__mro__[1].__subclasses__() }}",
            "{{ fn.__globals__ }}",
            "{{ fn.__code__ }}",
        ]:
            self.assertRaises(SecurityError, renderTemplate, source, {"fn": render})

    def test_sandboxRefusesHugeRanges(self):
        """
        The sandbox caps range() so a template cannot exhaust memory.
        """
        self.assertRaises(OverflowError, render, "{{ range(10 ** 8) | length }}")

    def test_templatesCompiledOnce(self):
        """
        Rendering the same source again reuses the compiled template.
        """
        compiled = []
        original = templating.environment.from_string

        def counting(source):
            compiled.append(source)
            return original(source)

        self.patch(templating.environment, "from_string", counting)
        source = "{{ x }} compiled-once-marker"
        self.assertEqual(renderTemplate(source, {"x": 1}), "1 compiled-once-marker")
        self.assertEqual(renderTemplate(source, {"x": 2}), "2 compiled-once-marker")
        self.assertEqual(compiled, [source])

    def test_isTemplate(self):
        """
        Only strings with {{ or {% count as templates.
        """
        self.assertTrue(isTemplate("a {{ b }}"))
        self.assertTrue(isTemplate("{% if x %}{% endif %}"))
        self.assertFalse(isTemplate("plain {# comment #}"))
        self.assertFalse(isTemplate(5))


class FilterTests(SynchronousTestCase):
    """
    The st2 filters, used through templates the way rules use them.
    """

    def test_allFiltersRegistered(self):
        """
        Every st2 filter name (and shell_quote) is in the environment.
        """
        names = {
            "to_json_string", "from_json_string", "to_yaml_string", "from_yaml_string",
            "json_escape", "jsonpath_query", "to_complex", "regex_match", "regex_replace",
            "regex_search", "regex_substring", "to_human_time_from_seconds", "version_compare",
            "version_more_than", "version_less_than", "version_equal", "version_match",
            "version_bump_major", "version_bump_minor", "version_bump_patch",
            "version_strip_patch", "use_none", "basename", "dirname", "shell_quote",
        }
        self.assertEqual(set(FILTERS), names)
        self.assertTrue(names <= set(templating.environment.filters))

    def test_toJsonString(self):
        """
        to_json_string gives JSON, with st2's default separators and
        optional indent and key sorting.
        """
        value = {"b": 1, "a": [True, None]}
        self.assertEqual(render("{{ v | to_json_string }}", v=value), '{"b": 1,"a": [true,null]}')
        self.assertEqual(render("{{ v | to_json_string(sort_keys=True) }}", v={"b": 1, "a": 2}),
                         '{"a": 2,"b": 1}')
        self.assertEqual(render("{{ v | to_json_string(indent=2) }}", v={"a": 1}), '{\n  "a": 1\n}')

    def test_serialisingUndefined(self):
        """
        Serialising filters given an undefined value report Jinja's
        undefined message, not a JSON type error.
        """
        for name in ["to_complex", "to_json_string", "to_yaml_string", "json_escape"]:
            error = self.assertRaises(UndefinedError, renderTemplate,
                                      "{{ t.nope | %s }}" % (name,), {"t": {}})
            self.assertEqual(str(error), "'dict object' has no attribute 'nope'")

    def test_fromJsonString(self):
        """
        from_json_string parses JSON text into data.
        """
        self.assertEqual(render("{{ (s | from_json_string).a[1] }}", s='{"a": [1, 2]}'), "2")

    def test_toYamlString(self):
        """
        to_yaml_string dumps block-style YAML.
        """
        self.assertEqual(render("{{ v | to_yaml_string }}", v={"a": [1, 2]}), "a:\n- 1\n- 2\n")

    def test_fromYamlString(self):
        """
        from_yaml_string parses YAML text (safely).
        """
        self.assertEqual(render("{{ (s | from_yaml_string).a.b }}", s="a:\n  b: deep\n"), "deep")
        self.assertRaises(Exception, render, "{{ s | from_yaml_string }}", s="!!python/object:os.system {}")

    def test_jsonEscape(self):
        """
        json_escape escapes quotes, backslashes and newlines without adding
        surrounding quotes.
        """
        self.assertEqual(render("{{ s | json_escape }}", s='say "hi"\n\\'), 'say \\"hi\\"\\n\\\\')

    def test_jsonpathQuery(self):
        """
        jsonpath_query returns the list of matches, or None for no match.
        """
        data = {"people": [{"name": "a"}, {"name": "b"}]}
        self.assertEqual(filters.jsonpathQuery(data, "people[*].name"), ["a", "b"])
        self.assertIsNone(filters.jsonpathQuery(data, "nobody"))
        self.assertEqual(render("{{ d | jsonpath_query('people[0].name') }}", d=data), "['a']")

    def test_toComplex(self):
        """
        to_complex is JSON encoding, which keeps types through a string.
        """
        self.assertEqual(render("{{ v | to_complex }}", v=5), "5")
        self.assertEqual(render("{{ v | to_complex }}", v="5"), '"5"')
        self.assertEqual(render("{{ v | to_complex }}", v={"a": None}), '{"a": null}')

    def test_regexFilters(self):
        """
        regex_match anchors at the start, regex_search does not, both accept
        ignorecase; regex_replace substitutes; regex_substring picks a
        findall result; non-strings are converted first.
        """
        self.assertEqual(render("{{ 'abc' | regex_match('b') }}"), "False")
        self.assertEqual(render("{{ 'abc' | regex_match('a') }}"), "True")
        self.assertEqual(render("{{ 'ABC' | regex_match('a', ignorecase=True) }}"), "True")
        self.assertEqual(render("{{ 'abc' | regex_search('b') }}"), "True")
        self.assertEqual(render("{{ 'ABC' | regex_search('b') }}"), "False")
        self.assertEqual(render("{{ 'a1b22' | regex_replace('[0-9]+', '#') }}"), "a#b#")
        self.assertEqual(render("{{ 'v1 v22' | regex_substring('v([0-9]+)', 1) }}"), "22")
        self.assertEqual(render("{{ 12345 | regex_search('234') }}"), "True")
        self.assertRaises(IndexError, render, "{{ 'abc' | regex_substring('z') }}")

    def test_toHumanTime(self):
        """
        to_human_time_from_seconds gives st2's compact forms.
        """
        cases = {0: "0s", 0.5: "0.5\u03bcs", 59: "59s", 61: "1m1s", 3661: "1h1m1s",
                 2 * 86400 + 5: "2d0h0m5s", 61.6: "1m2s", 365 * 86400: "1y0d0h0m0s"}
        for seconds, expected in cases.items():
            self.assertEqual(filters.toHumanTimeFromSeconds(seconds), expected, seconds)
        self.assertEqual(render("{{ 3661 | to_human_time_from_seconds }}"), "1h1m1s")
        self.assertRaises(TypeError, render, "{{ '5' | to_human_time_from_seconds }}")

    def test_versionComparisons(self):
        """
        version_compare, more_than, less_than and equal follow semver
        precedence, prereleases included.
        """
        self.assertEqual(render("{{ '1.2.3' | version_compare('1.3.0') }}"), "-1")
        self.assertEqual(render("{{ '1.10.0' | version_compare('1.9.9') }}"), "1")
        self.assertEqual(render("{{ '1.0.0' | version_compare('1.0.0+build5') }}"), "0")
        self.assertEqual(render("{{ '2.0.0' | version_more_than('1.9.9') }}"), "True")
        self.assertEqual(render("{{ '2.0.0' | version_less_than('1.9.9') }}"), "False")
        self.assertEqual(render("{{ '2.0.0' | version_equal('2.0.0') }}"), "True")
        ordered = ["1.0.0-2", "1.0.0-11", "1.0.0-alpha", "1.0.0-alpha.1", "1.0.0-alpha.beta",
                   "1.0.0-beta", "1.0.0"]
        for lower, higher in zip(ordered, ordered[1:]):
            self.assertEqual(filters.versionCompare(lower, higher), -1, (lower, higher))
            self.assertEqual(filters.versionCompare(higher, lower), 1, (higher, lower))

    def test_versionMatch(self):
        """
        version_match takes <op><version> with st2's six operators.
        """
        expectations = {">=1.0.0": True, ">1.0.0": True, "<2.0.0": True, "<=1.5.0": True,
                        "==1.5.0": True, "!=1.5.0": False, "<1.5.0": False, ">1.5.0": False}
        for expression, expected in expectations.items():
            self.assertEqual(filters.versionMatch("1.5.0", expression), expected, expression)
        self.assertEqual(render("{{ '1.5.0' | version_match('>1.0.0') }}"), "True")
        self.assertRaises(ValueError, filters.versionMatch, "1.5.0", "~1.0.0")

    def test_versionBumpAndStrip(self):
        """
        The bump filters increment one part and reset the lower ones;
        strip_patch keeps major.minor.
        """
        self.assertEqual(render("{{ '1.2.3-rc.1' | version_bump_major }}"), "2.0.0")
        self.assertEqual(render("{{ '1.2.3' | version_bump_minor }}"), "1.3.0")
        self.assertEqual(render("{{ '1.2.3' | version_bump_patch }}"), "1.2.4")
        self.assertEqual(render("{{ '1.2.3' | version_strip_patch }}"), "1.2")

    def test_versionInvalid(self):
        """
        A string that is not semver raises ValueError.
        """
        error = self.assertRaises(ValueError, render, "{{ '1.2' | version_bump_patch }}")
        self.assertEqual(str(error), "1.2 is not valid SemVer string")

    def test_useNone(self):
        """
        use_none turns None into the magic string and leaves others alone.
        """
        self.assertEqual(render("{{ v | use_none }}", v=None), NONE_MAGIC_VALUE)
        self.assertEqual(render("{{ v | use_none }}", v="x"), "x")

    def test_paths(self):
        """
        basename and dirname are os.path's.
        """
        self.assertEqual(render("{{ p | basename }}|{{ p | dirname }}", p="/opt/pack/run.sh"),
                         "run.sh|/opt/pack")

    INJECTIONS = [
        "plain",
        "two words",
        "'; rm -rf / #",
        '"; echo pwned; "',
        "$(id)",
        "`id`",
        "it's",
        "a\nb",
        "$HOME && ls | cat > /tmp/x",
        "",
        "-n",
    ]

    def test_shellQuoteRoundTrip(self):
        """
        shell_quote makes any text exactly one shell word.
        """
        for text in self.INJECTIONS:
            quoted = render("{{ v | shell_quote }}", v=text)
            self.assertEqual(shlex.split("echo " + quoted), ["echo", text], text)

    def test_shellQuoteInRealShell(self):
        """
        A real /bin/sh prints the quoted text literally instead of running
        anything embedded in it.
        """
        for text in self.INJECTIONS:
            command = render("printf '%s' {{ v | shell_quote }}", v=text)
            result = subprocess.run(["/bin/sh", "-c", command], capture_output=True, timeout=10)
            self.assertEqual(result.stdout.decode("utf-8"), text, text)

    def test_shellQuoteNonStrings(self):
        """
        Numbers are quoted as their text, None as an empty word.
        """
        self.assertEqual(render("{{ v | shell_quote }}", v=5), "5")
        self.assertEqual(render("{{ v | shell_quote }}", v=None), "''")


class RenderValueTests(SynchronousTestCase):
    """
    renderValue: strings rendered, containers walked, the rest untouched.
    """

    def test_literalStringUnchanged(self):
        """
        A string without {{ or {% is returned as the same object.
        """
        text = "no template {# here #} at all\n"
        self.assertIs(renderValue(text, {}), text)

    def test_templateRendered(self):
        """
        A template string renders to a string.
        """
        self.assertEqual(renderValue("n={{ trigger.n }}", {"trigger": {"n": 5}}), "n=5")
        self.assertEqual(renderValue("{{ trigger.n }}", {"trigger": {"n": 5}}), "5")

    def test_containersWalked(self):
        """
        Dict keys and values and list items are rendered recursively;
        other values pass through.
        """
        value = {"{{ k }}": ["{{ v }}", 3, None, {"x": "{{ v }}!"}], "flag": True}
        self.assertEqual(renderValue(value, {"k": "key", "v": "val"}),
                         {"key": ["val", 3, None, {"x": "val!"}], "flag": True})

    def test_errorsRaised(self):
        """
        Rendering errors surface as Jinja exceptions.
        """
        self.assertRaises(UndefinedError, renderValue, "{{ nope }}", {})
        self.assertRaises(TemplateSyntaxError, renderValue, "{{ x ", {})


class RenderParametersTests(SynchronousTestCase):
    """
    renderParameters: st2's dependency-graph rendering of parameters.
    """

    CONTEXT = {
        "trigger": {"body": {"name": "st2", "count": 3, "tags": ["a", "b"]}},
        "action_context": {"user": "stanley"},
    }

    def test_literalsUnchanged(self):
        """
        Values without templates come back as they are, types included.
        """
        params = {"a": 1, "b": "text", "c": [1, 2], "d": None, "e": {"k": "v"}}
        self.assertEqual(renderParameters(params, self.CONTEXT), params)

    def test_contextVariables(self):
        """
        Templates see the context (trigger, action_context, ...).
        """
        params = {"msg": "{{ trigger.body.name }} by {{ action_context.user }}"}
        self.assertEqual(renderParameters(params, self.CONTEXT), {"msg": "st2 by stanley"})

    def test_stringsStayStrings(self):
        """
        A top-level template renders to a string; casting is separate.
        """
        self.assertEqual(renderParameters({"n": "{{ trigger.body.count }}"}, self.CONTEXT), {"n": "3"})

    def test_dictIntoStringIsRepr(self):
        """
        A dict rendered into a string parameter is its Python repr.
        """
        result = renderParameters({"b": "{{ trigger.body.tags }}"}, self.CONTEXT)
        self.assertEqual(result, {"b": "['a', 'b']"})

    def test_dependencyOrder(self):
        """
        Parameters referring to other parameters render after them,
        whatever their order in the mapping.
        """
        params = {"c": "{{ b }}-c", "b": "{{ a }}-b", "a": "{{ trigger.body.name }}"}
        result = renderParameters(params, self.CONTEXT)
        self.assertEqual(result, {"c": "st2-b-c", "b": "st2-b", "a": "st2"})
        self.assertEqual(list(result), ["c", "b", "a"])

    def test_parameterShadowsContext(self):
        """
        A parameter named like a context entry is what templates see.
        """
        params = {"action_context": "mine", "x": "{{ action_context }}"}
        self.assertEqual(renderParameters(params, self.CONTEXT)["x"], "mine")

    def test_missingDependency(self):
        """
        A name that is neither a parameter nor in the context gives st2's
        "Dependency unsatisfied" message.
        """
        error = self.assertRaises(ParameterRenderError, renderParameters,
                                  {"a": "x", "b": "{{ variable_not_defined }}"}, self.CONTEXT)
        self.assertEqual(str(error), 'Dependency unsatisfied in variable "variable_not_defined"')
        self.assertIsInstance(error, ValueError)

    def test_selfReference(self):
        """
        A parameter referring to itself is a cycle, named in the message.
        """
        params = {"r3": "x", "cyclic": "{{ cyclic }}", "morecyclic": "{{ morecyclic }}"}
        error = self.assertRaises(ParameterRenderError, renderParameters, params, self.CONTEXT)
        self.assertEqual(
            str(error),
            "Cyclic dependency found in the following variables: cyclic, morecyclic. "
            "Likely the variable is referencing itself")

    def test_longerCycle(self):
        """
        A cycle through several parameters is reported once.
        """
        params = {"b": "{{ c }}", "a": "{{ b }}", "c": "{{ a }}", "d": "{{ a }}"}
        error = self.assertRaises(ParameterRenderError, renderParameters, params, self.CONTEXT)
        self.assertEqual(
            str(error),
            "Cyclic dependency found in the following variables: a. "
            "Likely the variable is referencing itself")

    def test_sharedDependenciesAreNotCycles(self):
        """
        Two parameters depending on the same one (a diamond) render fine.
        """
        params = {"top": "{{ left }}+{{ right }}", "left": "L{{ base }}", "right": "R{{ base }}",
                  "base": "{{ trigger.body.count }}"}
        self.assertEqual(renderParameters(params, self.CONTEXT)["top"], "L3+R3")

    def test_renderFailure(self):
        """
        A Jinja error while rendering names the parameter and carries
        Jinja's message.
        """
        error = self.assertRaises(ParameterRenderError, renderParameters,
                                  {"p": "{{ trigger.body.nope }}"}, self.CONTEXT)
        self.assertEqual(str(error), "Failed to render parameter \"p\": 'dict object' has no attribute 'nope'")
        error = self.assertRaises(ParameterRenderError, renderParameters,
                                  {"p": "{{ trigger.body.name | version_bump_major }}"}, self.CONTEXT)
        self.assertEqual(str(error), 'Failed to render parameter "p": st2 is not valid SemVer string')

    def test_invalidJinjaIsLiteral(self):
        """
        A value that looks like a template but does not parse is passed
        through literally, as st2 does.
        """
        self.assertEqual(renderParameters({"cmd": "echo {{"}, self.CONTEXT), {"cmd": "echo {{"})

    def test_jinjaGlobalsAreNotDependencies(self):
        """
        Jinja globals such as range are not missing parameters.
        """
        self.assertEqual(renderParameters({"r": "{{ range(3) | list }}"}, {}), {"r": "[0, 1, 2]"})

    def test_complexWholeVariableKeepsType(self):
        """
        Inside an object or array parameter, a string that is exactly
        "{{name}}" keeps the variable's type; other strings render to text.
        """
        params = {
            "tags": "{{ trigger.body.tags }}",
            "obj": {"list": "{{tags_list}}", "count": "{{count}}", "spaced": "{{ count }}",
                    "text": "n={{count}}", "fixed": 7},
            "arr": ["{{count}}", "{{ trigger.body.name }}"],
            "tags_list": ["x", "y"],
            "count": 3,
        }
        result = renderParameters(params, self.CONTEXT)
        self.assertEqual(result["obj"], {"list": ["x", "y"], "count": 3, "spaced": "3",
                                         "text": "n=3", "fixed": 7})
        self.assertEqual(result["arr"], [3, "st2"])

    def test_complexValuesWithQuotes(self):
        """
        A rendered value with quotes or newlines inside an object parameter
        stays intact.
        """
        context = {"trigger": {"msg": 'he said "hi"\nbye'}}
        result = renderParameters({"o": {"m": "{{ trigger.msg }}"}}, context)
        self.assertEqual(result, {"o": {"m": 'he said "hi"\nbye'}})

    def test_complexDependencies(self):
        """
        Templates inside an object parameter create dependencies too.
        """
        params = {"o": {"k": "{{a}}"}, "a": "{{ trigger.body.name }}"}
        self.assertEqual(renderParameters(params, self.CONTEXT), {"o": {"k": "st2"}, "a": "st2"})
        self.assertRaises(ParameterRenderError, renderParameters, {"o": ["{{ missing }}"]}, {})

    def test_useNoneBecomesNone(self):
        """
        The use_none magic string becomes None after rendering.
        """
        context = {"trigger": {"v": None}}
        params = {"a": "{{ trigger.v | use_none }}", "o": {"k": "{{ trigger.v | use_none }}"}}
        self.assertEqual(renderParameters(params, context), {"a": None, "o": {"k": None}})


class CastTests(SynchronousTestCase):
    """
    castValue: st2's casts by declared type after rendering.
    """

    def test_integer(self):
        """
        integer uses int().
        """
        self.assertEqual(castValue("5", "integer"), 5)
        self.assertEqual(castValue(5.7, "integer"), 5)
        self.assertRaises(ValueError, castValue, "5.5", "integer")
        self.assertRaises(ValueError, castValue, "x", "integer")
        self.assertRaises(ValueError, castValue, {"a": 1}, "integer")

    def test_number(self):
        """
        number uses float().
        """
        self.assertEqual(castValue("1.5", "number"), 1.5)
        self.assertEqual(castValue(2, "number"), 2.0)
        self.assertRaises(ValueError, castValue, "abc", "number")

    def test_boolean(self):
        """
        boolean evaluates the capitalised string as a Python literal.
        """
        self.assertIs(castValue("true", "boolean"), True)
        self.assertIs(castValue("False", "boolean"), False)
        self.assertIs(castValue(True, "boolean"), True)
        self.assertEqual(castValue("1", "boolean"), 1)
        self.assertRaises(ValueError, castValue, "yes", "boolean")
        self.assertRaises(ValueError, castValue, "", "boolean")

    def test_objectAndArray(self):
        """
        object and array try JSON, then Python literal syntax (the repr a
        rendered dict gives).
        """
        self.assertEqual(castValue('{"a": 1}', "object"), {"a": 1})
        self.assertEqual(castValue("{'name': 'st2', 'ok': True}", "object"), {"name": "st2", "ok": True})
        self.assertEqual(castValue("[1, 2]", "array"), [1, 2])
        self.assertEqual(castValue("['a', None]", "array"), ["a", None])
        self.assertEqual(castValue({"a": 1}, "object"), {"a": 1})
        self.assertRaises(ValueError, castValue, "not json", "object")

    def test_string(self):
        """
        string accepts only strings, with st2's message otherwise.
        """
        self.assertEqual(castValue("1000", "string"), "1000")
        error = self.assertRaises(ValueError, castValue, 1000, "string")
        self.assertEqual(str(error), 'Value "1000" must either be a string or None. Got "int".')

    def test_noneAndMagic(self):
        """
        None stays None and the use_none magic string becomes None, for
        every type.
        """
        for typeName in ["integer", "number", "boolean", "object", "array", "string"]:
            self.assertIsNone(castValue(None, typeName), typeName)
            self.assertIsNone(castValue(NONE_MAGIC_VALUE, typeName), typeName)

    def test_unknownOrMissingType(self):
        """
        Without a known type the value is left alone.
        """
        self.assertEqual(castValue("5", None), "5")
        self.assertEqual(castValue("5", "null"), "5")
        self.assertEqual(castValue("5", ["string", "null"]), "5")


class RegexFiltersCatastrophicTests(SynchronousTestCase):
    """
    The Jinja regex filters take patterns a payload can supply, so they run
    on RE2 like the criteria operators: a catastrophic pattern completes.
    """

    def test_catastrophicPatternCompletes(self) -> None:
        """
        C{(a+)+$} against a long non-matching subject returns (Python's
        C{re} would backtrack for hours); trial's timeout catches a hang.
        """
        context = {"p": "(a+)+$", "s": "a" * 5000 + "!"}
        self.assertEqual(templating.renderTemplate("{{ s | regex_match(p) }}", context), "False")
        self.assertEqual(templating.renderTemplate("{{ s | regex_search('(a+)+b') }}", context), "False")

    def test_filtersKeepTheirMeaning(self) -> None:
        """
        match anchors at the start, search does not, replace takes \\1
        groups, substring picks the n-th match, ignorecase works.
        """
        r = templating.renderTemplate
        self.assertEqual(r("{{ 'xab' | regex_match('ab') }}", {}), "False")
        self.assertEqual(r("{{ 'xab' | regex_search('ab') }}", {}), "True")
        self.assertEqual(r("{{ 'v1.2' | regex_replace('v(\\\\d)', 'w\\\\1') }}", {}), "w1.2")
        self.assertEqual(r("{{ 'a1b2' | regex_substring('\\\\d', 1) }}", {}), "2")
        self.assertEqual(r("{{ 'ABC' | regex_match('abc', ignorecase=True) }}", {}), "True")

    def test_backreferenceIsAClearError(self) -> None:
        """
        A pattern RE2 cannot take fails with an error naming the pattern.
        """
        from bwcd.rules.regex import RegexError

        self.assertRaises(RegexError, templating.renderTemplate, "{{ 'aa' | regex_match('(a)\\\\1') }}", {})
