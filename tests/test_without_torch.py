"""The runtime must import and work where torch is not installed."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def test_runtime_works_when_torch_cannot_be_imported(small_catalog):
    script = textwrap.dedent(f"""
        import sys

        class BlockTorch:
            def find_spec(self, name, path=None, target=None):
                if name == "torch" or name.startswith("torch."):
                    raise ImportError("torch is blocked in this test")
                return None

        sys.meta_path.insert(0, BlockTorch())
        try:
            import torch  # noqa: F401
        except ImportError:
            pass
        else:
            raise SystemExit("torch was importable")

        import convention_rt
        from convention_rt import catalog, cli, model_card, preprocess
        from convention_rt.catalog import Catalog
        from convention_rt.validate import summarise

        with Catalog({str(small_catalog)!r}) as opened:
            summary = summarise(opened)
        assert summary.n_objects == 6, summary
        assert cli.main(["validate", {str(small_catalog)!r}]) == 0
        assert not any(name == "torch" or name.startswith("torch.") for name in sys.modules)
        print("ok")
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip().endswith("ok")
