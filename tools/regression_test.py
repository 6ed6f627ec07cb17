"""CI evaluation job: export and evaluate every model of a regression file, fail on an AP drop.

    python tools/regression_test.py tests/regression/bundled.yml --work-dir work_dirs/regression

Writes report.md and report.json into the work dir; exits 1 when a backend falls below PyTorch by
more than its tolerance, PyTorch falls below its floor, or verification fails.

To see the job fail (a score threshold baked into the exported graph only; PyTorch keeps the
config's, so ONNX Runtime loses about 2 box AP against a tolerance of 0.1):

    python tools/regression_test.py tests/regression/retinanet.yml \
        --work-dir work_dirs/regression_fail --export-cfg-options model.test_cfg.score_thr=0.5
"""

import argparse
import sys

from deploy.apis.cli import ArgumentParser, run_cli
from deploy.config import add_cfg_options_argument
from deploy.config.loader import CfgOptionsAction


def parse_args(argv=None):
    parser = ArgumentParser(description=__doc__)
    parser.add_argument('regression_file', help='YAML file of models, metrics and tolerances')
    parser.add_argument('--work-dir', default='work_dirs/regression')
    parser.add_argument('--exporter', choices=('dynamo', 'torchscript'), default=None)
    parser.add_argument(
        '--skip-backend',
        action='append',
        default=[],
        help='backends to leave out (e.g. tensorrt on a CPU machine)',
    )
    parser.add_argument(
        '--models',
        nargs='+',
        metavar='NAME',
        help='run only these entries of the regression file (their `name`s)',
    )
    add_cfg_options_argument(parser)
    parser.add_argument(
        '--export-cfg-options',
        nargs='+',
        action=CfgOptionsAction,
        default=None,
        metavar='KEY=VALUE',
        help='overrides for the exported graph only (PyTorch keeps the config), e.g. '
        'model.test_cfg.score_thr=0.5 with tests/regression/retinanet.yml to see the job fail '
        'on an AP drop',
    )
    return parser.parse_args(argv)


def regression_options(args: argparse.Namespace):
    """The job's options from the parsed command line (their cheap checks run here)."""
    from deploy.apis.regression import RegressionOptions

    return RegressionOptions(
        cfg_options=args.cfg_options,
        export_cfg_options=args.export_cfg_options,
        exporter=args.exporter,
        skip_backends=tuple(args.skip_backend),
    )


def main(argv=None) -> int:
    args = parse_args(argv)
    options = regression_options(args)
    from deploy.apis.regression import (
        format_markdown,
        load_regression_file,
        run_regression_job,
        select_entries,
        write_reports,
    )

    entries = load_regression_file(args.regression_file)
    entries = select_entries(entries, args.models, args.regression_file)
    rows = run_regression_job(entries, args.work_dir, options)
    md, js = write_reports(rows, args.work_dir)
    print(format_markdown(rows))
    print(f'reports: {md} {js}')
    failed = [r for r in rows if not r.passed]
    if failed:
        print(f'regression FAILED for {len(failed)} row(s)', file=sys.stderr)
        return 1
    print('regression passed')
    return 0


if __name__ == '__main__':
    run_cli(main)
