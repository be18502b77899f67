"""The public API functions keep their names even after the same-named stage packages are imported."""

import zerotune


def test_api_functions_survive_submodule_imports():
    import zerotune.evaluate.run  # noqa: F401
    import zerotune.serve.app  # noqa: F401
    import zerotune.train.recipe  # noqa: F401

    for name in ("prepare", "train", "evaluate", "export", "serve", "plan", "load_config"):
        assert callable(getattr(zerotune, name)), name
