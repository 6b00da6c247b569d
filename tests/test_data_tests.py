"""Where the tests find the real data, and the line that ends every test run about it."""

from benchmark import data
from tests.data_tests import locate_test_data


def test_without_omniglot_dir_the_tests_use_the_folder_download_fills(tmp_path, monkeypatch, omniglot_dir):
    default = tmp_path / "data" / "omniglot"
    default.mkdir(parents=True)
    monkeypatch.delenv("OMNIGLOT_DIR", raising=False)
    monkeypatch.setattr(data, "PROJECT_DATA_DIR", default)
    folder, reason = locate_test_data()
    assert folder is None and "run `python run_benchmark.py download`" in reason and str(default) in reason
    (default / "omniglot.npz").symlink_to((omniglot_dir / "omniglot.npz").resolve())
    assert locate_test_data() == (default, "the default data directory")
    monkeypatch.setenv("OMNIGLOT_DIR", str(tmp_path / "elsewhere"))
    assert locate_test_data()[0] is None  # a wrong OMNIGLOT_DIR is not silently replaced


def test_the_run_ends_saying_how_many_data_tests_ran_or_were_skipped_and_why(pytester, monkeypatch, tmp_path):
    monkeypatch.delenv("OMNIGLOT_DIR", raising=False)
    monkeypatch.setattr(data, "PROJECT_DATA_DIR", tmp_path / "nothing")
    pytester.makepyfile(test_needs_data="""
        def test_with_data(omniglot_dir):
            assert omniglot_dir.is_dir()

        def test_without_data():
            pass
    """)
    result = pytester.runpytest("-p", "tests.data_tests", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, skipped=1)
    assert result.outlines[-1] == (f"data tests: 0 ran, 1 skipped: no Omniglot data in {tmp_path / 'nothing'} "
                                   f"(the default data directory): set OMNIGLOT_DIR (e.g. "
                                   f"OMNIGLOT_DIR=../shared/omniglot) or run `python run_benchmark.py download`")
