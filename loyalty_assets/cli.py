"""``loyalty-assets``: sample data, as-of runs through Dagster, and model promotion.

Exit codes: 0 done, 1 a run failed, 2 a user error (bad argument or setting), always one line.
Dagster is imported only by the commands that run it, so ``--help``, argument errors and
``check-config`` answer at once.
"""

from __future__ import annotations

import argparse
import sys
from datetime import date, datetime
from zoneinfo import ZoneInfo

from loyalty_assets.errors import RunFailed, UserError
from loyalty_assets.settings import Settings, SettingsError, load_settings

# A registered version is one path segment (e.g. 2026-10-01-1a2b3c4d), never a path.


class OneLineParser(argparse.ArgumentParser):
    """Argument errors as one line (argparse prints the usage block first)."""

    def error(self, message: str) -> None:
        self.exit(2, f"{self.prog}: {message} (see --help)\n")


def _parse_date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date (YYYY-MM-DD)") from error


def _parse_dates(text: str) -> list[date]:
    return [_parse_date(part.strip()) for part in text.split(",") if part.strip()]


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from error
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not a positive number")
    return value


def today_in(settings: Settings) -> date:
    return datetime.now(ZoneInfo(settings.timezone)).date()


def check_as_of(settings: Settings, as_of: date) -> None:
    """An as-of date the partitions can hold: from LOYALTY_START_DATE up to today."""
    if as_of < date.fromisoformat(settings.start_date):
        raise UserError(f"--as-of {as_of} is before LOYALTY_START_DATE={settings.start_date}")
    today = today_in(settings)
    if as_of > today:
        raise UserError(f"--as-of {as_of} is after today ({today} in {settings.timezone})")


def _sample_data(args: argparse.Namespace) -> None:
    from loyalty_assets.domain.sample_data import SampleConfig, default_drop_dates, write_drops
    from loyalty_assets.runner import store_for_uri

    settings = load_settings()
    dates = args.dates or default_drop_dates(args.end, days=args.days)
    config = SampleConfig(
        customers=args.customers,
        history_months=args.months,
        seed=args.seed,
        activity_variant=args.variant,
        file_format=args.format,
    )
    landing = args.landing or settings.landing_uri
    keys = write_drops(store_for_uri(landing, settings), sorted(set(dates)), config)
    print(f"wrote {len(keys)} files for {len(set(dates))} drops to {landing}")


def _check_config(args: argparse.Namespace) -> None:
    settings = load_settings()
    print(
        f"configuration OK (LOYALTY_ENV={settings.env}): landing {settings.landing_uri}, lake {settings.lake_uri}, "
        f"Dagster instance {settings.dagster_home}"
    )


def _run(args: argparse.Namespace) -> None:
    settings = load_settings()
    check_as_of(settings, args.as_of)
    from loyalty_assets.runner import run_as_of

    run_as_of(settings, args.as_of, echo=print, verbose=args.verbose)


def _demo(args: argparse.Namespace) -> None:
    settings = load_settings()
    check_as_of(settings, args.as_of)
    from loyalty_assets.runner import demo

    demo(settings, args.as_of, echo=print, verbose=args.verbose, customers=args.customers)


def _model_promote(args: argparse.Namespace) -> None:
    if args.force and not args.reason:
        raise UserError("--force needs --reason: say why a version that did not pass its gates is promoted")
    settings = load_settings()
    from loyalty_assets.domain.registry import RegistryError
    from loyalty_assets.runner import promote_model_version

    try:
        promote_model_version(
            settings,
            args.kind, args.version, reason=args.reason, force=args.force, echo=print, verbose=args.verbose
        )
    except RegistryError as error:
        raise UserError(str(error)) from error


def _model_list(args: argparse.Namespace) -> None:
    settings = load_settings()
    from loyalty_assets.runner import list_model_versions

    list_model_versions(settings, args.kind, echo=print)


def _parse_effects(text: str) -> dict[str, float]:
    try:
        return {tier.strip(): float(factor) for tier, factor in (part.split("=") for part in text.split(","))}
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"{text!r} is not TIER=FACTOR[,TIER=FACTOR...]") from error


def _simulate_experiment(args: argparse.Namespace) -> None:
    from loyalty_assets.simulation import SimulationPlan, simulate_experiment

    try:
        plan = SimulationPlan(
            customers=args.customers, weeks=args.weeks, effects=args.effects, control_share=args.control_share
        )
    except ValueError as error:
        raise UserError(str(error)) from error
    result = simulate_experiment(load_settings(), plan, echo=print)
    table = result.uplift
    columns = ["action", "risk_tier", "members_treated", "members_held_out", "churn_treated", "churn_held_out",
               "risk_reduction", "risk_reduction_low", "risk_reduction_high", "true_risk_reduction"]  # fmt: skip
    print(table.loc[table["members_held_out"] > 0, columns].to_string(index=False, float_format="{:.3f}".format))
    verdicts = (f"{name} {'passed' if passed else 'WARN'}" for name, passed in result.checks_passed.items())
    print("checks: " + ", ".join(verdicts))


def _serve(args: argparse.Namespace) -> None:
    from loyalty_assets.serving.app import serve

    serve(args.host, args.port, args.workers)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="loyalty-assets", description="Sample data, as-of runs through Dagster, and model promotion."
    )
    verbose = OneLineParser(add_help=False)
    verbose.add_argument(
        "-v", "--verbose", action="store_true", help="show the Dagster log (it is always in the instance)"
    )
    commands = parser.add_subparsers(dest="command", required=True)

    sample = commands.add_parser("sample-data", help="write simulated landing drops in the real file format")
    sample.add_argument("--customers", type=_positive_int, default=15000)
    sample.add_argument("--months", type=_positive_int, default=24, help="complete months of activity history")
    sample.add_argument("--end", type=_parse_date, default=date.today(), help="last drop date (default today)")
    sample.add_argument("--days", type=_positive_int, default=7, help="number of daily drops ending on --end")
    sample.add_argument(
        "--dates", type=_parse_dates, help="explicit comma-separated drop dates (overrides --end/--days)"
    )
    sample.add_argument("--seed", type=int, default=7)
    sample.add_argument("--landing", help="landing root, a folder or s3://bucket/prefix (default LOYALTY_LANDING_URI)")
    sample.add_argument("--variant", choices=["10-column", "8-column"], default="10-column")
    sample.add_argument("--format", choices=["csv", "csv.gz", "parquet"], default="csv")
    sample.set_defaults(handler=_sample_data)

    check = commands.add_parser(
        "check-config", help="name every missing or invalid environment variable; changes nothing"
    )
    check.set_defaults(handler=_check_config)

    run = commands.add_parser(
        "run", parents=[verbose], help="materialize the graph through Dagster for the partitions of a date"
    )
    run.add_argument("--as-of", type=_parse_date, required=True, dest="as_of")
    run.set_defaults(handler=_run)

    demo = commands.add_parser(
        "demo", parents=[verbose], help="write the sample drops missing up to --as-of, run --as-of, summary"
    )
    demo.add_argument("--as-of", type=_parse_date, default=date.today(), dest="as_of")
    demo.add_argument("--customers", type=_positive_int, default=15000, help="members of the sample drops")
    demo.set_defaults(handler=_demo)

    simulate = commands.add_parser(
        "simulate-experiment",
        help="a closed retention-experiment loop on simulated members through the real pipeline; prints uplift",
    )
    simulate.add_argument("--customers", type=int, default=8000)
    simulate.add_argument("--weeks", type=int, default=2, help="scored weeks before the outcome horizon")
    simulate.add_argument(
        "--effects",
        type=_parse_effects,
        default={"Medium": 1.0, "High": 0.6, "Critical": 0.3},
        help="planted hazard factor per risk tier for treated members (1.0 = no effect)",
    )
    simulate.add_argument("--control-share", type=float, default=0.5, dest="control_share")
    simulate.set_defaults(handler=_simulate_experiment)

    model = commands.add_parser("model", help="list model versions, promote or roll back")
    model_commands = model.add_subparsers(dest="model_command", required=True)
    promote = model_commands.add_parser("promote", parents=[verbose], help="make a registered version the champion")
    promote.add_argument("--kind", choices=["churn", "segmentation"], default="churn")
    promote.add_argument("--version", required=True)
    promote.add_argument("--reason", help="why (recorded in the promotion history)")
    promote.add_argument("--force", action="store_true", help="allow a version that did not pass its gates")
    promote.set_defaults(handler=_model_promote)
    listing = model_commands.add_parser("list", help="registered versions and the promotion history")
    listing.add_argument("--kind", choices=["churn", "segmentation"], default="churn")
    listing.set_defaults(handler=_model_list)

    serve = commands.add_parser("serve", help="the online churn-scoring HTTP API (keys in LOYALTY_API_KEYS)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8080)
    serve.add_argument(
        "--workers", type=_positive_int, default=1, help="uvicorn worker processes; each loads and reloads the champions"
    )
    serve.set_defaults(handler=_serve)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.handler(args)
    except (UserError, SettingsError) as error:
        print(f"loyalty-assets: {error}", file=sys.stderr)
        return 2
    except RunFailed as error:
        print(f"loyalty-assets: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
