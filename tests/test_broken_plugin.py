"""Plugin loading with real installed distributions that are broken in different ways.

Each test installs test packages from ``tests/plugins/`` and runs ``splice plugins`` in a
fresh interpreter, so entry points are discovered exactly as for a user's install.
"""

from __future__ import annotations

import json

# ``splice plugins``, as the console script runs it.
SPLICE_PLUGINS = ("-c", "import sys; from splice.cli import main; sys.exit(main())", "plugins")


def test_broken_plugin_is_reported_on_one_line_and_the_rest_still_load(install_plugin, run_python):
    broken, example = install_plugin("splice-broken"), install_plugin("splice-example-ffn")
    done = run_python(*SPLICE_PLUGINS, plugins=[broken, example])
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    failed = [line for line in lines if "splice-broken" in line]
    assert failed == [
        "splice-broken 0.0.1 (entry point 'broken'): FAILED to load: "
        "RuntimeError: splice-broken fails on import on purpose"
    ]
    assert "this second line" not in done.stdout
    # Everything else is listed with versions and tags: core, the first-party plugins, relu2.
    assert any(line.startswith("splice-core ") for line in lines)
    assert any(line.startswith("splice-mha ") for line in lines)
    assert "splice-example-ffn 0.1.0 (entry point 'relu2')" in lines
    assert "  channel_mixer: relu2" in lines
    assert "  token_mixer: cross_attention, mha, mla" in lines


def test_strict_mode_reraises_the_import_error(install_plugin, run_python):
    done = run_python(
        *SPLICE_PLUGINS,
        plugins=[install_plugin("splice-broken")],
        env={"SPLICE_STRICT_PLUGINS": "1"},
    )
    assert done.returncode == 1
    assert "plugin 'broken' (splice-broken) failed to load: RuntimeError" in done.stderr
    # ... after the plugin's own traceback, which ends in the line that raised
    assert "Traceback (most recent call last)" in done.stderr
    assert done.stderr.index("Traceback") < done.stderr.index("splice plugins: error:")


def test_strict_mode_reraises_in_python_with_the_original_cause(install_plugin, run_python):
    code = (
        "from splice.registry import PluginError, get_registry\n"
        "try:\n"
        "    get_registry()\n"
        "except PluginError as exc:\n"
        "    print(type(exc.__cause__).__name__, exc.__cause__)\n"
    )
    done = run_python("-c", code, plugins=[install_plugin("splice-broken")],
                      env={"SPLICE_STRICT_PLUGINS": "1"})  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("RuntimeError splice-broken fails on import on purpose")


def test_disabled_plugins_are_not_imported(install_plugin, run_python):
    code = (
        "import json, sys\n"
        "from splice.registry import get_registry\n"
        "reg = get_registry()\n"
        "print(json.dumps([sorted(reg.plugins), reg.disabled, 'splice_broken' in sys.modules]))\n"
    )
    done = run_python(
        "-c",
        code,
        plugins=[install_plugin("splice-broken"), install_plugin("splice-example-ffn")],
        env={"SPLICE_DISABLE_PLUGINS": "broken, relu2"},
    )
    assert done.returncode == 0, done.stderr
    loaded, disabled, imported = json.loads(done.stdout)
    assert "core" in loaded and "mha" in loaded
    assert "broken" not in loaded and "relu2" not in loaded
    assert disabled == ["broken", "relu2"]
    assert imported is False


def test_disabled_plugins_are_listed_by_splice_plugins(install_plugin, run_python):
    done = run_python(*SPLICE_PLUGINS, plugins=[install_plugin("splice-broken")],
                      env={"SPLICE_DISABLE_PLUGINS": "broken"})  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "FAILED" not in done.stdout
    assert done.stdout.splitlines()[-1] == "disabled by SPLICE_DISABLE_PLUGINS: broken"


def test_duplicate_tag_names_both_distributions(install_plugin, run_python):
    plugins = [install_plugin("splice-example-ffn"), install_plugin("splice-duplicate")]
    done = run_python(*SPLICE_PLUGINS, plugins=plugins)
    assert done.returncode == 1
    assert "channel_mixer tag 'relu2' is registered by both" in done.stderr
    assert "splice-duplicate" in done.stderr and "splice-example-ffn" in done.stderr
    # The way out the message suggests works.
    done = run_python(*SPLICE_PLUGINS, plugins=plugins, env={"SPLICE_DISABLE_PLUGINS": "relu2"})
    assert done.returncode == 0, done.stderr
    assert "splice-duplicate 0.0.1 (entry point 'duplicate')" in done.stdout


def test_misspelled_hook_is_caught_by_check_pending(install_plugin, run_python):
    done = run_python(*SPLICE_PLUGINS, "--json", plugins=[install_plugin("splice-typo")])
    assert done.returncode == 0, done.stderr
    rows = {row["name"]: row for row in json.loads(done.stdout)["plugins"]}
    error = rows["typo"]["error"]
    assert "unknown hook 'register_token_mixer'" in error
    assert "did you mean 'register_token_mixers'?" in error
    assert rows["core"]["error"] is None and rows["mha"]["error"] is None


def test_unknown_tag_error_mentions_the_plugin_that_failed_to_load(install_plugin, run_python):
    code = (
        "from splice.registry import get_registry\n"
        "try:\n"
        "    get_registry().get('channel_mixer', 'geglu')\n"
        "except ValueError as exc:\n"
        "    print(exc)\n"
    )
    done = run_python("-c", code, plugins=[install_plugin("splice-broken")])
    assert done.returncode == 0, done.stderr
    listed = done.stdout.partition("registered channel_mixer types: [")[2].partition("]")[0]
    assert {"'mlp'", "'swiglu'"} <= set(listed.split(", ")), done.stdout
    assert "Plugins that failed to load: broken (RuntimeError" in done.stdout


def test_splice_plugins_imports_neither_torch_nor_component_modules(install_plugin, run_python):
    """Listing plugins imports entry-point modules only, never torch or lazy factories."""
    code = (
        "import sys\n"
        "import splice\n"
        "assert 'torch' not in sys.modules, 'import splice imported torch'\n"
        "from splice.cli import main\n"
        "main(['plugins'])\n"
        "from splice.registry import get_registry\n"
        "lazy = {r.factory.partition(':')[0] for k in ('channel_mixer', 'token_mixer', 'block',\n"
        "        'model', 'norm', 'positional', 'regularizer', 'objective', 'task')\n"
        "        for r in get_registry().registrations(k) if isinstance(r.factory, str)}\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] == 'torch' or m in lazy)\n"
        "print('HEAVY', heavy, len(lazy))\n"
    )
    done = run_python("-c", code, plugins=[install_plugin("splice-example-ffn")])
    assert done.returncode == 0, done.stderr
    last = done.stdout.splitlines()[-1]
    assert last.startswith("HEAVY [] "), last
    assert int(last.split()[-1]) >= 5  # the check saw the lazy factories, incl. relu2's
