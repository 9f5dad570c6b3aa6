"""The instrument master: Kite's real CSV quirks, the bundled master, and bad input."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import polars as pl
import pytest

from config.instruments import (
    COLUMNS,
    SCHEMA,
    Instrument,
    InstrumentMaster,
    InstrumentMasterError,
    bundled_path,
)
from scripts.generate_instruments import build_rows, write_csv

SAMPLE = Path(__file__).resolve().parents[1] / "fixtures" / "kite-instruments-sample.csv"
HEADER = ",".join(COLUMNS)

#: Kite segment names -> the wire's segment number in the token's low byte.
SEGMENT_IDS = {"NSE": 1, "NFO": 2, "CDS": 3, "BSE": 4, "BFO": 5, "MCX": 7, "INDICES": 9}


@pytest.fixture(scope="module")
def sample() -> InstrumentMaster:
    return InstrumentMaster.load(SAMPLE)


@pytest.fixture(scope="module")
def bundled() -> InstrumentMaster:
    return InstrumentMaster.load()


# --- the real sample ------------------------------------------------------------------------


def test_sample_loads_every_row_with_the_explicit_schema(sample: InstrumentMaster) -> None:
    assert len(sample) == 99
    assert sample.report.rows_read == 99
    assert sample.report.skipped_count == 0
    assert sample.frame.schema == SCHEMA


def test_sample_option_row_by_value(sample: InstrumentMaster) -> None:
    # 12073986,47164,BANKNIFTY18JAN23500CE,,2528.4,2018-01-25,23500.0,0.05,40,CE,NFO-OPT,NFO
    inst = sample.get(12073986)
    assert inst == Instrument(
        instrument_token=12073986,
        exchange_token=47164,
        tradingsymbol="BANKNIFTY18JAN23500CE",
        name="",
        last_price=2528.4,
        expiry=date(2018, 1, 25),
        strike=23500.0,
        tick_size=0.05,
        lot_size=40,
        instrument_type="CE",
        segment="NFO-OPT",
        exchange="NFO",
    )
    assert inst.is_option and not inst.is_future and not inst.is_index
    assert inst.option_type == "CE"
    assert inst.segment_id == 2
    # The name is empty in this old row: the underlying comes from the symbol.
    assert inst.root == "BANKNIFTY"


def test_sample_equity_and_bond_rows_by_value(sample: InstrumentMaster) -> None:
    # 3861249,15083,ADANIPORTS,ADANI PORT & SEZ,0.0,,0.0,0.05,1,EQ,NSE,NSE
    eq = sample.by_symbol("NSE", "ADANIPORTS")
    assert eq is not None
    assert (eq.instrument_token, eq.exchange_token, eq.name) == (3861249, 15083, "ADANI PORT & SEZ")
    assert eq.expiry is None and eq.strike == 0.0 and eq.option_type is None
    assert not eq.is_option and not eq.is_future and eq.tradable
    # 112655620,440061,828GOI27-ML,828GOI2027,0.0,,0.0,0.25,500000,EQ,BSE,BSE
    bond = sample.get(112655620)
    assert bond is not None
    assert (bond.tick_size, bond.lot_size, bond.exchange) == (0.25, 500000, "BSE")
    assert bond.segment_id == 4
    # A symbol with an ampersand, as Kite writes it.
    assert sample.by_symbol("BSE", "COX&KINGS") is not None
    assert sample.by_symbol("NSE", "COX&KINGS") is None


def test_sample_tokens_follow_the_exchange_token_rule(sample: InstrumentMaster) -> None:
    for inst in sample:
        assert inst.instrument_token == (inst.exchange_token << 8) | inst.segment_id


def test_sample_underlyings_and_chains(sample: InstrumentMaster) -> None:
    # ADANIPORTS17DEC490PE -> the NSE equity ADANIPORTS, which the sample has.
    assert sample.underlying_token(13693186) == 3861249
    # No NIFTY BANK index and no INDIACEM equity in the sample: unknown, not wrong.
    assert sample.underlying_token(12073986) is None
    assert sample.underlying_token(21227266) is None
    assert sample.underlying_token(3861249) is None  # not a derivative
    expiries = [date(2017, 11, 30), date(2017, 12, 28), date(2018, 1, 25)]
    assert sample.expiries("BANKNIFTY") == expiries
    chain = sample.options_chain("BANKNIFTY", date(2018, 1, 25))
    assert [(i.strike, i.instrument_type) for i in chain] == [
        (23400.0, "CE"),
        (23400.0, "PE"),
        (23500.0, "CE"),
        (23500.0, "PE"),
        (23600.0, "CE"),
        (23600.0, "PE"),
        (23700.0, "CE"),
        (23700.0, "PE"),
    ]
    assert sample.options_chain("BANKNIFTY", date(2030, 1, 1)) == []


def test_container_protocol(sample: InstrumentMaster) -> None:
    assert 12073986 in sample
    assert 1 not in sample
    assert sample.get(1) is None
    assert sample.tokens() == [i.instrument_token for i in sample]
    assert len(set(sample.tokens())) == len(sample)


def test_as_row_round_trips_the_csv_text(sample: InstrumentMaster) -> None:
    lines = SAMPLE.read_text().splitlines()
    rows = {line.split(",")[0]: line for line in lines[1:]}
    for inst in sample:
        row = inst.as_row()
        assert ",".join(row[c] for c in COLUMNS) == rows[str(inst.instrument_token)]


# --- the bundled master ---------------------------------------------------------------------


def test_bundled_master_is_large_and_clean(bundled: InstrumentMaster) -> None:
    assert bundled_path().is_file()
    assert bundled_path().stat().st_size < 2_000_000
    assert len(bundled) >= 9_500
    assert bundled.report.skipped_count == 0
    df = bundled.frame
    assert df.schema == SCHEMA
    assert df.get_column("instrument_token").n_unique() == df.height
    assert df.select(pl.struct("exchange", "tradingsymbol").n_unique()).item() == df.height


def test_every_bundled_token_is_exchange_token_shifted_with_its_segment(
    bundled: InstrumentMaster,
) -> None:
    df = bundled.frame.with_columns(
        pl.col("segment").str.split("-").list.first().replace_strict(SEGMENT_IDS).alias("seg")
    )
    bad = df.filter(pl.col("instrument_token") != (pl.col("exchange_token") * 256 + pl.col("seg")))
    assert bad.height == 0, bad.head()
    assert all(0 < t < 2**32 for t in bundled.tokens())  # fits the wire's uint32


def test_bundled_real_tokens(bundled: InstrumentMaster) -> None:
    known = {
        ("NSE", "NIFTY 50"): 256265,
        ("NSE", "NIFTY BANK"): 260105,
        ("NSE", "INDIA VIX"): 264969,
        ("NSE", "NIFTY FIN SERVICE"): 257801,
        ("NSE", "NIFTY MID SELECT"): 288009,
        ("BSE", "SENSEX"): 265,
        ("NSE", "RELIANCE"): 738561,
        ("NSE", "INFY"): 408065,
        ("NSE", "TCS"): 2953217,
        ("NSE", "HDFCBANK"): 341249,
        ("NSE", "ICICIBANK"): 1270529,
        ("NSE", "SBIN"): 779521,
        ("BSE", "RELIANCE"): 128083204,
    }
    for (exchange, symbol), token in known.items():
        inst = bundled.by_symbol(exchange, symbol)
        assert inst is not None, symbol
        assert inst.instrument_token == token, symbol
    nifty = bundled.get(256265)
    assert nifty is not None
    # Kite's index rows: instrument_type EQ, segment INDICES, no tick or lot size.
    assert (nifty.instrument_type, nifty.segment, nifty.tick_size, nifty.lot_size) == (
        "EQ",
        "INDICES",
        0.0,
        0,
    )
    assert nifty.is_index and not nifty.tradable


def test_bundled_underlyings(bundled: InstrumentMaster) -> None:
    expect = {
        "NIFTY": 256265,
        "BANKNIFTY": 260105,
        "FINNIFTY": 257801,
        "MIDCPNIFTY": 288009,
        "SENSEX": 265,
        "RELIANCE": 738561,
        "M&M": bundled.by_symbol("NSE", "M&M").instrument_token,  # type: ignore[union-attr]
    }
    seen: set[str] = set()
    for inst in bundled:
        if inst.is_derivative and inst.root in expect:
            assert bundled.underlying_token(inst.instrument_token) == expect[inst.root], inst
            seen.add(inst.root)
        if inst.exchange in ("MCX", "CDS"):
            assert bundled.underlying_token(inst.instrument_token) is None
    assert seen == set(expect)
    under = bundled.underlying(bundled.by_symbol("BFO", "SENSEX26DECFUT").instrument_token)  # type: ignore[union-attr]
    assert under is not None and under.exchange == "BSE" and under.is_index


def test_bundled_derivatives_follow_kite_conventions(bundled: InstrumentMaster) -> None:
    segments = {i.segment for i in bundled}
    expected = {"INDICES", "NSE", "BSE", "NFO-FUT", "NFO-OPT", "BFO-OPT", "CDS-FUT", "MCX-FUT"}
    assert expected <= segments
    for inst in bundled:
        if not inst.is_derivative:
            assert inst.expiry is None and inst.strike == 0.0
            continue
        assert inst.expiry is not None and inst.expiry >= date(2026, 11, 24)
        assert inst.lot_size > 0 and inst.tick_size > 0
        assert inst.name == inst.root
        if inst.is_option:
            assert inst.tradingsymbol.endswith(inst.instrument_type)
            assert inst.strike > 0
        else:
            assert inst.tradingsymbol.endswith("FUT") and inst.strike == 0.0
        # Reference prices sit on the grid.
        n = inst.last_price / inst.tick_size
        assert abs(n - round(n)) < 1e-6, inst
        # NSE expiries are Tuesdays, BSE's Thursdays.
        if inst.exchange == "NFO":
            assert inst.expiry.weekday() == 1, inst
        if inst.exchange == "BFO":
            assert inst.expiry.weekday() == 3, inst
    assert bundled.by_symbol("NFO", "NIFTY26DEC26150CE") is not None  # monthly format
    weekly = bundled.by_symbol("NFO", "NIFTY26D0826150PE")  # weekly: month code + day
    assert weekly is not None and weekly.expiry == date(2026, 12, 8)
    assert len(bundled.expiries("NIFTY")) >= 5
    chain = bundled.options_chain("NIFTY", date(2026, 12, 1))
    assert len(chain) >= 120  # "120+ contracts per expiry"


def test_bundled_master_is_what_the_generator_writes(tmp_path: Path) -> None:
    """The committed CSV is in sync with scripts/generate_instruments.py (deterministic)."""
    out = tmp_path / "instruments.csv"
    write_csv(build_rows(date(2026, 11, 24)), out)
    assert out.read_bytes() == bundled_path().read_bytes()


# --- bad input ------------------------------------------------------------------------------


def test_bad_rows_are_reported_not_fatal(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(
        "\n".join(
            [
                HEADER,
                "abc,1,X,X,0.0,,0.0,0.05,1,EQ,NSE,NSE",  # non-numeric token
                "5,1",  # truncated row
                "261,1,Y,Y,1.0,2020-13-01,0.0,0.05,1,EQ,NSE,NSE",  # impossible date
                "265,1,SENSEX,SENSEX,0.0,,0.0,0.0,0,EQ,INDICES,BSE",  # good
                "265,1,DUP,SENSEX,0.0,,0.0,0.0,0,EQ,INDICES,BSE",  # duplicate token
                "513,2,Z,Z,0.0,,0.0,0.05,2.5,EQ,NSE,NSE",  # fractional lot
                "769,3,W,W,nan,,0.0,0.05,1,EQ,NSE,NSE",  # not a price
                "1025,4,V,V,12.5,,0.0,0.05,1,EQ,NSE,NSE",  # good
            ]
        )
        + "\n"
    )
    master = InstrumentMaster.load(path)
    assert master.tokens() == [265, 1025]
    report = master.report
    assert (report.rows_read, report.rows_loaded, report.skipped_count) == (8, 2, 6)
    reasons = {s.row: s.reason for s in report.skipped}
    assert reasons[1] == "bad instrument_token: 'abc'"
    assert reasons[2].startswith("missing ")
    assert reasons[3] == "bad expiry: '2020-13-01'"
    assert reasons[5] == "duplicate instrument_token: 265"
    assert reasons[6] == "bad lot_size: '2.5'"
    assert reasons[7] == "bad last_price: 'nan'"
    assert "6 skipped" in report.summary()


def test_missing_file_names_the_path(tmp_path: Path) -> None:
    path = tmp_path / "nowhere" / "instruments.csv"
    with pytest.raises(InstrumentMasterError, match=str(path)) as caught:
        InstrumentMaster.load(path)
    assert isinstance(caught.value, FileNotFoundError)


def test_missing_column_is_a_configuration_error(tmp_path: Path) -> None:
    path = tmp_path / "short.csv"
    path.write_text("instrument_token,exchange_token,tradingsymbol\n256265,1001,NIFTY 50\n")
    with pytest.raises(InstrumentMasterError, match="lacks column"):
        InstrumentMaster.load(path)


def test_from_instruments_round_trips(sample: InstrumentMaster) -> None:
    subset = [i for i in sample if i.exchange == "NFO"]
    again = InstrumentMaster.from_instruments(subset)
    assert list(again) == subset
    assert again.frame.schema == SCHEMA
