"""Generate the bundled instrument master, ``config/data/instruments.csv``.

The real Kite master is an authenticated download that changes daily, so the project
ships a synthetic one in exactly Kite's format: it lets the simulator, the tests and a
laptop demo run with no account. It has to be realistic where the pipeline cares:
Kite's real tokens for the instruments people know (NIFTY 50 is 256265, RELIANCE 738561),
``instrument_token = exchange_token << 8 | segment`` for every row, Kite's symbol formats
(``NIFTY26DEC26000CE`` monthly, ``NIFTY26D0826000CE`` weekly, ``RELIANCE26DECFUT``),
NSE's current expiry rules (NIFTY weekly on Tuesdays, monthlies on the last Tuesday,
SENSEX on Thursdays; BANKNIFTY and the other NSE indices monthly only, as since Nov 2024),
and every segment and price divisor the wire has (NSE, NFO, BSE, BFO, CDS, MCX, indices).

Deterministic: the output depends only on ``--reference-date`` (contracts expiring before
it are not listed; option prices are Black-Scholes values at its open). Run::

    python -m scripts.generate_instruments [--reference-date 2026-11-24] [--output PATH]
"""

from __future__ import annotations

import argparse
import calendar
import csv
import math
import random
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from fractions import Fraction
from pathlib import Path

from config.instruments import COLUMNS, bundled_path
from core.market_simulator import IST, RISK_FREE_RATE, black_scholes, smile_iv

DEFAULT_REFERENCE_DATE = date(2026, 11, 24)

SEG_NSE, SEG_NFO, SEG_CDS, SEG_BSE, SEG_BFO, SEG_MCX, SEG_INDICES = 1, 2, 3, 4, 5, 7, 9

_MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
#: Kite's one-character month code in weekly option symbols.
_WEEKLY_MONTH = "123456789OND"

Row = tuple[int, int, str, str, float, str, float, float, int, str, str, str]
#: add(segment, exchange_token, symbol, name, price, expiry, strike, tick, lot, type,
#: segment name, exchange)
AddRow = Callable[[int, int, str, str, float, date | None, float, float, int, str, str, str], None]

# fmt: off
#: NSE indices: (tradingsymbol, exchange_token as Kite lists it, reference level).
NSE_INDICES: tuple[tuple[str, int, float], ...] = (
    ("NIFTY 50", 1001, 26150.0),
    ("NIFTY FIN SERVICE", 1007, 27640.0),
    ("NIFTY BANK", 1016, 59240.0),
    ("INDIA VIX", 1035, 13.45),
    ("NIFTY MID SELECT", 1125, 13755.0),
    ("NIFTY NEXT 50", 1058, 70480.0),
    ("NIFTY IT", 1015, 36520.0),
    ("NIFTY AUTO", 1029, 27480.0),
    ("NIFTY PHARMA", 1025, 22610.0),
    ("NIFTY FMCG", 1023, 55790.0),
    ("NIFTY METAL", 1030, 10320.0),
    ("NIFTY REALTY", 1020, 921.5),
    ("NIFTY MIDCAP 100", 1003, 60480.0),
    ("NIFTY 100", 1018, 26910.0),
    ("NIFTY 500", 1047, 24310.0),
    ("NIFTY PSU BANK", 1027, 8105.0),
    ("NIFTY ENERGY", 1022, 35790.0),
    ("NIFTY MEDIA", 1031, 1552.0),
)
BSE_INDICES: tuple[tuple[str, int, float], ...] = (
    ("SENSEX", 1, 85620.0),
    ("BANKEX", 1072, 66110.0),
)

#: Index derivatives: (root, exchange, index tradingsymbol, lot, strike step,
#: weekly expiries listed (0 = monthly only), strikes each side of ATM).
INDEX_DERIVATIVES: tuple[tuple[str, str, str, int, float, int, int], ...] = (
    ("NIFTY", "NFO", "NIFTY 50", 65, 50.0, 5, 50),
    ("BANKNIFTY", "NFO", "NIFTY BANK", 30, 100.0, 0, 40),
    ("FINNIFTY", "NFO", "NIFTY FIN SERVICE", 60, 50.0, 0, 30),
    ("MIDCPNIFTY", "NFO", "NIFTY MID SELECT", 120, 25.0, 0, 30),
    ("NIFTYNXT50", "NFO", "NIFTY NEXT 50", 25, 100.0, 0, 20),
    ("SENSEX", "BFO", "SENSEX", 20, 100.0, 4, 40),
    ("BANKEX", "BFO", "BANKEX", 30, 100.0, 0, 20),
)

#: NSE equities, most traded first: symbol | name | reference price | NSE exchange token
#: (0 = synthesise) | BSE scrip code (0 = not listed here) | in F&O (1/0).
STOCKS = """
RELIANCE|RELIANCE INDUSTRIES|1512.4|2885|500325|1
HDFCBANK|HDFC BANK|1001.3|1333|500180|1
ICICIBANK|ICICI BANK|1389.6|4963|532174|1
INFY|INFOSYS|1542.8|1594|500209|1
TCS|TATA CONSULTANCY SERV LT|3128.5|11536|532540|1
SBIN|STATE BANK OF INDIA|968.35|3045|500112|1
BHARTIARTL|BHARTI AIRTEL|2104.6|10604|532454|1
ITC|ITC|405.9|1660|500875|1
LT|LARSEN & TOUBRO|4021.7|11483|500510|1
KOTAKBANK|KOTAK MAHINDRA BANK|2118.2|1922|500247|1
AXISBANK|AXIS BANK|1236.45|5900|532215|1
HINDUNILVR|HINDUSTAN UNILEVER|2452.1|1394|500696|1
BAJFINANCE|BAJAJ FINANCE|1021.55|317|500034|1
MARUTI|MARUTI SUZUKI INDIA|16125.0|10999|532500|1
SUNPHARMA|SUN PHARMACEUTICAL IND L|1784.3|3351|524715|1
M&M|MAHINDRA & MAHINDRA|3712.6|2031|500520|1
TITAN|TITAN COMPANY|3842.15|3506|500114|1
ULTRACEMCO|ULTRATECH CEMENT|11820.0|11532|532538|1
NTPC|NTPC|328.45|11630|532555|1
HCLTECH|HCL TECHNOLOGIES|1612.9|7229|532281|1
TATASTEEL|TATA STEEL|171.62|3499|500470|1
POWERGRID|POWER GRID CORP|271.35|14977|532898|1
ONGC|OIL AND NATURAL GAS CORP.|246.18|2475|500312|1
ASIANPAINT|ASIAN PAINTS|2896.4|236|500820|1
ADANIENT|ADANI ENTERPRISES|2398.7|25|512599|1
ADANIPORTS|ADANI PORT & SEZ|1468.25|15083|532921|1
BAJAJFINSV|BAJAJ FINSERV|2041.8|16675|532978|1
JSWSTEEL|JSW STEEL|1158.9|11723|500228|1
WIPRO|WIPRO|246.37|3787|507685|1
NESTLEIND|NESTLE INDIA|1262.4|17963|500790|1
COALINDIA|COAL INDIA|382.85|20374|533278|1
TECHM|TECH MAHINDRA|1498.6|13538|532755|1
GRASIM|GRASIM INDUSTRIES|2754.3|1232|500300|1
HINDALCO|HINDALCO  INDUSTRIES|812.45|1363|500440|1
INDUSINDBK|INDUSIND BANK|842.1|5258|532187|1
DRREDDY|DR. REDDY S LABORATORIES|1268.9|881|500124|1
CIPLA|CIPLA|1521.35|694|500087|1
BPCL|BHARAT PETROLEUM CORP  LT|362.7|526|500547|1
EICHERMOT|EICHER MOTORS|6984.5|910|505200|1
HEROMOTOCO|HERO MOTOCORP|5612.0|1348|500182|1
BRITANNIA|BRITANNIA INDUSTRIES|5904.5|547|500825|1
DIVISLAB|DIVI S LABORATORIES|6512.0|10940|532488|1
APOLLOHOSP|APOLLO HOSPITALS ENTER. L|7468.0|157|508869|1
TATACONSUM|TATA CONSUMER PRODUCT LTD|1158.2|3432|500800|1
SBILIFE|SBI LIFE INSURANCE CO LTD|1984.6|21808|540719|1
HDFCLIFE|HDFC LIFE INS CO LTD|761.35|467|540777|1
BAJAJ-AUTO|BAJAJ AUTO|9012.5|16669|532977|1
SHRIRAMFIN|SHRIRAM FINANCE|812.3|4306|511218|1
TRENT|TRENT|4512.8|1964|500251|1
ETERNAL|ETERNAL|298.55|5097|543320|1
BEL|BHARAT ELECTRONICS|412.65|383|500049|1
TMPV|TATA MOTORS PASS VEH LTD|402.15|0|0|1
JIOFIN|JIO FIN SERVICES LTD|304.7|0|543940|1
HAL|HINDUSTAN AERONAUTICS|4687.0|2303|541154|1
DLF|DLF|742.35|14732|532868|1
VEDL|VEDANTA|512.4|3063|500295|1
BANKBARODA|BANK OF BARODA|286.9|4668|532134|1
PNB|PUNJAB NATIONAL BANK|121.37|10666|532461|1
CANBK|CANARA BANK|151.84|10794|532483|1
GAIL|GAIL (INDIA)|182.66|4717|532155|1
IOC|INDIAN OIL CORP|168.42|1624|530965|1
TATAPOWER|TATA POWER CO|392.6|3426|500400|1
ADANIGREEN|ADANI GREEN ENERGY|1012.5|3563|541450|1
ADANIPOWER|ADANI POWER|148.73|17388|533096|1
PIDILITIND|PIDILITE INDUSTRIES|1478.9|2664|500331|1
DABUR|DABUR INDIA|512.85|772|500096|1
GODREJCP|GODREJ CONSUMER PRODUCTS|1168.4|10099|532424|1
SIEMENS|SIEMENS|3124.0|3150|500550|1
HAVELLS|HAVELLS INDIA|1502.3|9819|517354|1
AMBUJACEM|AMBUJA CEMENTS|562.75|1270|500425|1
ACC|ACC|1842.6|22|500410|1
LUPIN|LUPIN|2012.4|10440|500257|1
AUROPHARMA|AUROBINDO PHARMA|1198.5|275|524804|1
BIOCON|BIOCON|372.15|11373|532523|1
MUTHOOTFIN|MUTHOOT FINANCE|3312.0|23650|533398|1
JINDALSTEL|JINDAL STEEL|1012.8|6733|532286|1
SAIL|STEEL AUTHORITY OF INDIA|132.47|2963|500113|1
NMDC|NMDC|76.42|15332|526371|1
HINDPETRO|HINDUSTAN PETROLEUM CORP|468.3|1406|500104|1
ICICIPRULI|ICICI PRU LIFE INS CO LTD|622.45|18652|540133|1
LICI|LIFE INSURA CORP OF INDIA|912.6|9480|543526|1
IDEA|VODAFONE IDEA|9.87|14366|532822|1
YESBANK|YES BANK|22.68|11915|532648|1
IDFCFIRSTB|IDFC FIRST BANK|78.65|11184|539437|1
FEDERALBNK|FEDERAL BANK|241.3|1023|500469|1
BANDHANBNK|BANDHAN BANK|156.2|2263|541153|1
AUBANK|AU SMALL FINANCE BANK|902.4|21238|540611|1
IRCTC|INDIAN RAIL TOUR CORP LTD|712.5|13611|542830|1
IRFC|INDIAN RAILWAY FIN CORP L|121.84|2029|543257|1
RECLTD|REC|372.9|15355|532955|1
PFC|POWER FIN CORP|384.6|14299|532810|1
CHOLAFIN|CHOLAMANDALAM IN & FIN CO|1698.0|685|511243|1
TVSMOTOR|TVS MOTOR COMPANY|3512.4|8479|532343|1
BOSCHLTD|BOSCH|37420.0|2181|500530|1
MOTHERSON|SAMVRDHNA MTHRSN INTL LTD|104.35|4204|517334|1
ASHOKLEY|ASHOK LEYLAND|162.8|212|500477|1
BHEL|BHEL|268.4|438|500103|1
INDIGO|INTERGLOBE AVIATION|5712.0|11195|539448|1
POLYCAB|POLYCAB INDIA|7412.5|9590|542652|1
DIXON|DIXON TECHNO (INDIA) LTD|15820.0|21690|540699|1
PERSISTENT|PERSISTENT SYSTEMS|6124.0|18365|533179|1
COFORGE|COFORGE|1832.4|11543|532541|1
LTIM|LTIMINDTREE|5812.5|17818|540005|1
MPHASIS|MPHASIS|2812.0|4503|526299|1
OFSS|ORACLE FIN SERV SOFT LTD.|8712.0|10738|532466|1
NAUKRI|INFO EDGE (I)|1398.2|13751|532777|1
PAYTM|ONE 97 COMMUNICATIONS LTD|1284.6|6705|543396|1
POLICYBZR|PB FINTECH LTD|1812.4|6656|543390|1
NYKAA|FSN E COMMERCE VENTURES|252.36|6545|543384|1
DMART|AVENUE SUPERMARTS|4012.0|19913|540376|1
GODREJPROP|GODREJ PROPERTIES|2212.6|17875|533150|1
OBEROIRLTY|OBEROI REALTY|1712.3|20242|533273|1
LODHA|LODHA DEVELOPERS|1198.4|3220|543287|1
PRESTIGE|PRESTIGE ESTATE LTD|1642.8|20302|533274|1
MARICO|MARICO|712.45|4067|531642|1
COLPAL|COLGATE PALMOLIVE|2212.0|15141|500830|1
UNITDSPR|UNITED SPIRITS|1398.6|10447|532432|1
VBL|VARUN BEVERAGES|468.9|18921|540180|1
TORNTPHARM|TORRENT PHARMACEUTICALS|3612.0|3518|500420|1
ZYDUSLIFE|ZYDUS LIFESCIENCES|968.4|7929|532321|1
ALKEM|ALKEM LABORATORIES|5612.0|11703|539523|1
MANKIND|MANKIND PHARMA|2412.5|15380|543904|1
GLENMARK|GLENMARK PHARMACEUTICALS|1912.3|7406|532296|1
MAXHEALTH|MAX HEALTHCARE INS LTD|1142.6|22377|543220|1
INDHOTEL|THE INDIAN HOTELS CO LTD|742.85|1512|500850|1
JUBLFOOD|JUBILANT FOODWORKS|612.4|18096|533155|1
PAGEIND|PAGE INDUSTRIES|41250.0|14413|532827|1
VOLTAS|VOLTAS|1398.2|3718|500575|1
BLUESTARCO|BLUE STAR|1812.0|8311|500067|1
CUMMINSIND|CUMMINS INDIA|4012.5|1901|500480|1
ABB|ABB INDIA|5312.0|13|500002|1
CGPOWER|CG POWER AND IND SOL LTD|712.4|760|500093|1
SUZLON|SUZLON ENERGY|58.42|12018|532667|1
TATAELXSI|TATA ELXSI|5412.0|3411|500408|1
KPITTECH|KPIT TECHNOLOGIES LTD|1298.4|9683|542651|1
HDFCAMC|HDFC AMC|5412.5|4244|541729|1
ICICIGI|ICICI LOMBARD GIC LTD|1912.3|21770|540716|1
SBICARD|SBI CARDS & PAY SER LTD|892.4|17971|543066|1
LICHSGFIN|LIC HOUSING FINANCE|572.3|1997|500253|1
MANAPPURAM|MANAPPURAM FINANCE|282.65|19061|531213|1
BAJAJHLDNG|BAJAJ HOLDINGS & INVS LTD|12412.0|0|500490|0
SRF|SRF|2912.4|3273|503806|1
PIIND|PI INDUSTRIES|3612.0|24184|523642|1
UPL|UPL|712.35|11287|512070|1
COROMANDEL|COROMANDEL INTERNTL. LTD|2312.0|739|506395|1
CHAMBLFERT|CHAMBAL FERTILIZERS|512.4|637|500085|1
DEEPAKNTR|DEEPAK NITRITE|1912.6|830|506401|0
TATACHEM|TATA CHEMICALS|912.45|3405|500770|1
ASTRAL|ASTRAL LIMITED|1412.3|14418|532830|1
SUPREMEIND|SUPREME INDUSTRIES|4212.0|3363|509930|1
SHREECEM|SHREE CEMENT|28412.0|3103|500387|1
DALBHARAT|DALMIA BHARAT|2112.6|8075|542216|1
JKCEMENT|J.K. CEMENT|5812.0|13270|532644|1
BERGEPAINT|BERGER PAINTS (I)|512.35|404|509480|1
INDUSTOWER|INDUS TOWERS|398.6|29135|534816|1
TATACOMM|TATA COMMUNICATIONS|1812.4|3721|500483|1
PETRONET|PETRONET LNG|298.45|11351|532522|1
IGL|INDRAPRASTHA GAS|212.36|11262|532514|1
MGL|MAHANAGAR GAS|1312.0|17534|539957|1
OIL|OIL INDIA|432.6|17438|533106|1
NHPC|NHPC|82.47|17400|533098|1
SJVN|SJVN|92.34|18883|533206|0
TORNTPOWER|TORRENT POWER|1312.5|13786|532779|1
JSWENERGY|JSW ENERGY|512.3|11617|533148|1
ADANIENSOL|ADANI ENERGY SOLUTION LTD|912.6|10217|539254|1
CONCOR|CONTAINER CORP OF IND|542.35|4749|531344|1
BHARATFORG|BHARAT FORGE|1312.4|422|500493|1
MRF|MRF|151200.0|2277|500290|1
APOLLOTYRE|APOLLO TYRES|512.6|163|500877|1
BALKRISIND|BALKRISHNA IND.|2412.0|335|502355|1
EXIDEIND|EXIDE INDUSTRIES|392.4|676|500086|1
ESCORTS|ESCORTS KUBOTA LIMITED|3612.0|958|500495|0
SONACOMS|SONA BLW PRECISION FRGS L|482.35|4684|543300|1
UNOMINDA|UNO MINDA LIMITED|1212.4|14154|532539|1
NATIONALUM|NATIONAL ALUMINIUM CO|242.18|6364|532234|1
HINDZINC|HINDUSTAN ZINC|482.6|1424|500188|1
HINDCOPPER|HINDUSTAN COPPER|312.45|17939|513599|1
APLAPOLLO|APL APOLLO TUBES LTD|1712.3|25780|533758|1
CROMPTON|CROMPTON GR CON ELECTR LTD|342.15|17094|539876|1
KALYANKJIL|KALYAN JEWELLERS IND LTD|512.6|2955|543278|1
PATANJALI|PATANJALI FOODS LIMITED|612.4|17029|500368|1
IEX|INDIAN ENERGY EXC LTD|142.36|220|540750|1
CDSL|CENTRAL DEPO SER (I) LTD|1612.5|21174|0|1
BSE|BSE LIMITED|2612.0|19585|0|1
MCX|MULTI COMMODITY EXCHANGE|9412.0|31181|534091|1
ANGELONE|ANGEL ONE LIMITED|2712.4|324|543235|1
CAMS|COMPUTER AGE MNGT SER LTD|3912.0|342|543232|1
LAURUSLABS|LAURUS LABS LIMITED|912.35|19234|540222|1
SYNGENE|SYNGENE INTERNATIONAL LTD|642.3|10243|539268|1
IPCALAB|IPCA LABORATORIES|1412.0|1633|524494|0
GRANULES|GRANULES INDIA LIMITED|512.65|11872|532482|1
AARTIIND|AARTI INDUSTRIES|412.3|7|524208|0
NAVINFLUOR|NAVIN FLUORINE INT. LTD|4612.0|14672|532504|0
ATUL|ATUL|6412.0|263|500027|0
RAMCOCEM|THE RAMCO CEMENTS|1012.4|2043|500260|0
GUJGASLTD|GUJARAT GAS|432.15|10599|539336|0
ABCAPITAL|ADITYA BIRLA CAPITAL|312.45|21614|540691|1
ABFRL|ADITYA BIRLA FASHION & RT|82.36|30108|535755|0
PEL|PIRAMAL ENTERPRISES|1112.4|2412|500302|0
L&TFH|L&T FINANCE LTD|282.65|24948|533519|1
POONAWALLA|POONAWALLA FINCORP LTD|462.3|11403|524000|0
M&MFIN|M&M FIN. SERVICES|312.4|13285|532720|1
IDBI|IDBI BANK|98.42|1476|500116|0
INDIANB|INDIAN BANK|712.35|14309|532814|1
UNIONBANK|UNION BANK OF INDIA|142.65|10753|532477|1
BANKINDIA|BANK OF INDIA|128.4|4745|532149|1
RBLBANK|RBL BANK|292.35|18391|540065|1
CENTRALBK|CENTRAL BANK OF INDIA|38.42|14894|532885|0
UCOBANK|UCO BANK|32.18|11223|532505|0
HUDCO|HSG & URBAN DEV CORPN LTD|232.4|20825|540530|1
IREDA|INDIAN RENEWABLE ENERGY|152.65|20261|544026|1
RVNL|RAIL VIKAS NIGAM LIMITED|342.35|9552|542649|1
MAZDOCK|MAZAGON DOCK SHIPBUIL LTD|2812.0|509|543237|1
COCHINSHIP|COCHIN SHIPYARD LIMITED|1712.4|21508|540678|0
BDL|BHARAT DYNAMICS LIMITED|1512.6|2144|541143|1
SOLARINDS|SOLAR INDUSTRIES (I) LTD|13412.0|13332|532725|1
""".strip()

#: BSE-only listings (no NSE row here): symbol | name | price | scrip code.
BSE_ONLY = """
FFTF16BGR|FORTIS FIXED TERM FUND - SERIE|10.12|533139
AISHWARYA|AISHWARYA TELECOM|4.56|532975
DEN|DEN NETWORKS|38.42|533137
ASTEC|ASTEC LIFESCIENCES|812.35|533138
DLINKINDIA|D-LINK (INDIA)|412.6|533146
MBLINFRA|MBL INFRASTRUCTURES|42.35|533152
AHLWEST|ASIAN HOTELS (WEST)|312.4|533221
GAL|GYSCOAL ALLOYS|2.18|533275
BSLIMITED|BS|1.12|533276
IVZINGOLD|INVESCO INDIA GOLD EXCHANGE TR|112.45|533172
""".strip()

#: Currency futures: (symbol, reference price, tick).
CURRENCIES = (
    ("USDINR", 89.1425, 0.0025),
    ("EURINR", 103.2175, 0.0025),
    ("GBPINR", 117.4525, 0.0025),
    ("JPYINR", 57.3150, 0.0025),
)
#: MCX futures: (symbol, reference price, tick, lot, expiry rule).
COMMODITIES = (
    ("CRUDEOIL", 5312.0, 1.0, 100, "crude"),
    ("CRUDEOILM", 5312.0, 1.0, 10, "crude"),
    ("NATURALGAS", 382.4, 0.1, 1250, "gas"),
    ("GOLD", 125140.0, 1.0, 1, "gold"),
    ("GOLDM", 124980.0, 1.0, 1, "gold"),
    ("SILVER", 152300.0, 1.0, 1, "silver"),
    ("COPPER", 1012.35, 0.05, 2500, "copper"),
)
# fmt: on


@dataclass(frozen=True, slots=True)
class Stock:
    symbol: str
    name: str
    price: float
    nse_token: int
    bse_code: int
    fno: bool


def parse_stocks(text: str = STOCKS) -> list[Stock]:
    out = []
    for line in text.splitlines():
        symbol, name, price, nse, bse, fno = line.split("|")
        out.append(Stock(symbol, name, float(price), int(nse), int(bse), fno == "1"))
    return out


# --- grid and formatting -----------------------------------------------------------------


def on_grid(value: float, tick: float, *, floor: float | None = None) -> float:
    """The nearest price on the tick grid, as the double nearest its decimal value."""
    frac = Fraction(str(tick)).limit_denominator(1_000_000)
    n = max(round(value * frac.denominator / frac.numerator), 1)
    price = n * frac.numerator / frac.denominator
    if floor is not None and price < floor:
        return floor
    return price


def equity_tick(price: float) -> float:
    """NSE's tick sizes since 2025: one paisa below Rs 250, five paise above."""
    return 0.01 if price < 250.0 else 0.05


def lot_for(price: float) -> int:
    """F&O lots are sized so one lot is worth roughly Rs 5-10 lakh."""
    raw = 750_000.0 / price
    for nice in (
        1,
        2,
        5,
        10,
        15,
        20,
        25,
        30,
        40,
        50,
        60,
        75,
        100,
        125,
        150,
        200,
        250,
        300,
        400,
        500,
        600,
        750,
        900,
        1000,
        1200,
        1500,
        1800,
        2000,
        2500,
        3000,
        3500,
        4000,
        5000,
        6000,
        7500,
        9000,
        10000,
        12000,
        15000,
        20000,
        25000,
        30000,
        40000,
        50000,
        75000,
        100000,
    ):
        if nice >= raw * 0.8:
            return nice
    return 100000


def strike_step(price: float) -> float:
    """The largest customary strike interval at or below ~2 % of the price."""
    target = price * 0.02
    step = 0.5
    for nice in (0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0):
        if nice <= target:
            step = nice
    return step


def strike_text(strike: float) -> str:
    return str(int(strike)) if strike == int(strike) else f"{strike:g}"


# --- expiries ----------------------------------------------------------------------------


def last_weekday(year: int, month: int, weekday: int) -> date:
    day = date(year, month, calendar.monthrange(year, month)[1])
    return day - timedelta(days=(day.weekday() - weekday) % 7)


def business_day_on_or_before(day: date) -> date:
    while day.weekday() >= 5:
        day -= timedelta(days=1)
    return day


def months_from(ref: date, count: int) -> Iterator[tuple[int, int]]:
    year, month = ref.year, ref.month
    for _ in range(count):
        yield year, month
        month += 1
        if month == 13:
            year, month = year + 1, 1


def monthly_expiries(ref: date, weekday: int, count: int = 3) -> list[date]:
    """The next ``count`` monthly expiries (last ``weekday`` of the month) on or after ref."""
    out = [last_weekday(y, m, weekday) for y, m in months_from(ref, count + 1)]
    return [d for d in out if d >= ref][:count]


def weekly_expiries(ref: date, weekday: int, count: int) -> list[date]:
    first = ref + timedelta(days=(weekday - ref.weekday()) % 7)
    return [first + timedelta(weeks=k) for k in range(count)]


def currency_expiries(ref: date, count: int = 3) -> list[date]:
    """Two business days before the month's last business day."""
    out = []
    for y, m in months_from(ref, count + 1):
        day = business_day_on_or_before(date(y, m, calendar.monthrange(y, m)[1]))
        for _ in range(2):
            day = business_day_on_or_before(day - timedelta(days=1))
        if day >= ref:
            out.append(day)
    return out[:count]


def commodity_expiries(ref: date, rule: str, count: int = 3) -> list[date]:
    months = {
        "crude": range(1, 13),
        "gas": range(1, 13),
        "copper": range(1, 13),
        "gold": (2, 4, 6, 8, 10, 12),
        "silver": (3, 5, 7, 9, 12),
    }[rule]
    out = []
    for y, m in months_from(ref, 24):
        if m not in months:
            continue
        if rule == "crude":
            day = date(y, m, 19)
        elif rule == "gas":
            day = date(y, m, 26)
        elif rule == "copper":
            day = date(y, m, calendar.monthrange(y, m)[1])
        else:
            day = date(y, m, 5)
        day = business_day_on_or_before(day)
        if day >= ref:
            out.append(day)
        if len(out) == count:
            break
    return out


def option_symbol(root: str, expiry: date, strike: float, kind: str, monthly: bool) -> str:
    yy = expiry.strftime("%y")
    if monthly:
        return f"{root}{yy}{_MONTHS[expiry.month - 1]}{strike_text(strike)}{kind}"
    return f"{root}{yy}{_WEEKLY_MONTH[expiry.month - 1]}{expiry.day:02d}{strike_text(strike)}{kind}"


def future_symbol(root: str, expiry: date) -> str:
    return f"{root}{expiry.strftime('%y')}{_MONTHS[expiry.month - 1]}FUT"


# --- the master --------------------------------------------------------------------------


class _Tokens:
    """Exchange tokens per segment: Kite's real ones where given, else the next free."""

    def __init__(self) -> None:
        self.used: dict[int, set[int]] = {}
        self.next: dict[int, int] = {
            SEG_NSE: 30001,
            SEG_NFO: 35001,
            SEG_BSE: 590001,
            SEG_BFO: 825001,
            SEG_CDS: 10001,
            SEG_MCX: 450001,
        }

    def take(self, segment: int, exchange_token: int = 0) -> tuple[int, int]:
        used = self.used.setdefault(segment, set())
        if exchange_token == 0 or exchange_token in used:
            exchange_token = self.next[segment]
            while exchange_token in used:
                exchange_token += 1
            self.next[segment] = exchange_token + 1
        used.add(exchange_token)
        return (exchange_token << 8) | segment, exchange_token


def _years_to(ref_open: datetime, expiry: date) -> float:
    close = datetime(expiry.year, expiry.month, expiry.day, 15, 30, tzinfo=IST)
    return max((close - ref_open).total_seconds(), 0.0) / (365.0 * 86_400.0)


def build_rows(ref: date = DEFAULT_REFERENCE_DATE) -> list[Row]:
    """Every row of the master for reference date ``ref``, most important first."""
    tokens = _Tokens()
    rows: list[Row] = []
    ref_open = datetime(ref.year, ref.month, ref.day, 9, 15, tzinfo=IST)

    def add(
        segment: int,
        exchange_token: int,
        symbol: str,
        name: str,
        price: float,
        expiry: date | None,
        strike: float,
        tick: float,
        lot: int,
        itype: str,
        seg_name: str,
        exchange: str,
    ) -> None:
        token, etok = tokens.take(segment, exchange_token)
        rows.append(
            (
                token,
                etok,
                symbol,
                name,
                price,
                expiry.isoformat() if expiry else "",
                strike,
                tick,
                lot,
                itype,
                seg_name,
                exchange,
            )
        )

    index_level: dict[str, float] = {}
    for symbol, etok, level in NSE_INDICES:
        add(SEG_INDICES, etok, symbol, symbol, level, None, 0.0, 0.0, 0, "EQ", "INDICES", "NSE")
        index_level[symbol] = level
    for symbol, etok, level in BSE_INDICES:
        add(SEG_INDICES, etok, symbol, symbol, level, None, 0.0, 0.0, 0, "EQ", "INDICES", "BSE")
        index_level[symbol] = level

    stocks = parse_stocks()
    # Every NSE listing first, then the BSE listings of the same companies.
    for segment, exchange in ((SEG_NSE, "NSE"), (SEG_BSE, "BSE")):
        for s in stocks:
            # NSE: every stock (0 = allocate a token); BSE: only those with a BSE code.
            listing = s.nse_token if segment == SEG_NSE else s.bse_code
            if segment == SEG_NSE or listing:
                tick = equity_tick(s.price)
                add(segment, listing, s.symbol, s.name, on_grid(s.price, tick), None, 0.0, tick,
                    1, "EQ", exchange, exchange)  # fmt: skip
    for line in BSE_ONLY.splitlines():
        symbol, name, price_text, code = line.split("|")
        price = float(price_text)
        add(
            SEG_BSE,
            int(code),
            symbol,
            name,
            on_grid(price, equity_tick(price)),
            None,
            0.0,
            equity_tick(price),
            1,
            "EQ",
            "BSE",
            "BSE",
        )

    vols = {sym: 0.13 for sym in index_level}
    vols.update(
        {
            "NIFTY BANK": 0.15,
            "NIFTY MID SELECT": 0.18,
            "NIFTY NEXT 50": 0.17,
            "NIFTY FIN SERVICE": 0.15,
            "BANKEX": 0.15,
        }
    )

    # Futures: index then stock, three monthly expiries each.
    for root, exchange, index_symbol, lot, _, _, _ in INDEX_DERIVATIVES:
        seg, seg_name = (SEG_NFO, "NFO-FUT") if exchange == "NFO" else (SEG_BFO, "BFO-FUT")
        weekday = 1 if exchange == "NFO" else 3
        spot = index_level[index_symbol]
        for expiry in monthly_expiries(ref, weekday):
            price = on_grid(spot * math.exp(RISK_FREE_RATE * _years_to(ref_open, expiry)), 0.05)
            add(
                seg,
                0,
                future_symbol(root, expiry),
                root,
                price,
                expiry,
                0.0,
                0.05,
                lot,
                "FUT",
                seg_name,
                exchange,
            )
    fno = [s for s in stocks if s.fno]
    stock_monthlies = monthly_expiries(ref, 1)
    for s in fno:
        for expiry in stock_monthlies:
            price = on_grid(s.price * math.exp(RISK_FREE_RATE * _years_to(ref_open, expiry)), 0.05)
            add(
                SEG_NFO,
                0,
                future_symbol(s.symbol, expiry),
                s.symbol,
                price,
                expiry,
                0.0,
                0.05,
                lot_for(s.price),
                "FUT",
                "NFO-FUT",
                "NFO",
            )
    for symbol, price, tick in CURRENCIES:
        for expiry in currency_expiries(ref):
            fut = on_grid(price * math.exp(0.02 * _years_to(ref_open, expiry)), tick)
            add(
                SEG_CDS,
                0,
                future_symbol(symbol, expiry),
                symbol,
                fut,
                expiry,
                0.0,
                tick,
                1,
                "FUT",
                "CDS-FUT",
                "CDS",
            )
    for symbol, price, tick, lot, rule in COMMODITIES:
        for expiry in commodity_expiries(ref, rule):
            fut = on_grid(price * math.exp(0.05 * _years_to(ref_open, expiry)), tick)
            add(
                SEG_MCX,
                0,
                future_symbol(symbol, expiry),
                symbol,
                fut,
                expiry,
                0.0,
                tick,
                lot,
                "FUT",
                "MCX-FUT",
                "MCX",
            )

    # Index options: weeklies (where listed) and three monthlies.
    for root, exchange, index_symbol, lot, step, weeklies, width in INDEX_DERIVATIVES:
        seg, seg_name = (SEG_NFO, "NFO-OPT") if exchange == "NFO" else (SEG_BFO, "BFO-OPT")
        weekday = 1 if exchange == "NFO" else 3
        monthlies = monthly_expiries(ref, weekday)
        expiries = sorted(set(monthlies) | set(weekly_expiries(ref, weekday, weeklies)))
        spot = index_level[index_symbol]
        for rank, expiry in enumerate(expiries):
            monthly = expiry == last_weekday(expiry.year, expiry.month, weekday)
            each_side = width if rank < 4 else (width * 4) // 5
            _chain(
                add,
                seg,
                seg_name,
                exchange,
                root,
                expiry,
                monthly,
                spot,
                step,
                each_side,
                lot,
                vols[index_symbol],
                ref_open,
            )

    # Stock options: near month widest, far month narrowest.
    for s in fno:
        rng = random.Random(f"tickflow-master:{s.symbol}")
        vol = 0.22 + 0.18 * rng.random()
        for expiry, each_side in zip(stock_monthlies, (7, 4, 2), strict=False):
            _chain(
                add,
                SEG_NFO,
                "NFO-OPT",
                "NFO",
                s.symbol,
                expiry,
                True,
                s.price,
                strike_step(s.price),
                each_side,
                lot_for(s.price),
                vol,
                ref_open,
            )
    return rows


def _chain(
    add: AddRow,
    seg: int,
    seg_name: str,
    exchange: str,
    root: str,
    expiry: date,
    monthly: bool,
    spot: float,
    step: float,
    each_side: int,
    lot: int,
    vol: float,
    ref_open: datetime,
) -> None:
    atm = round(spot / step) * step
    t = _years_to(ref_open, expiry)
    for k in range(-each_side, each_side + 1):
        strike = atm + k * step
        if strike <= 0:
            continue
        iv = smile_iv(vol * 1.05, spot, strike, t)
        for kind in ("CE", "PE"):
            value = black_scholes(spot, strike, t, iv, call=kind == "CE")
            add(
                seg,
                0,
                option_symbol(root, expiry, strike, kind, monthly),
                root,
                on_grid(value, 0.05),
                expiry,
                float(strike),
                0.05,
                lot,
                kind,
                seg_name,
                exchange,
            )


def write_csv(rows: Sequence[Row], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(COLUMNS)
        writer.writerows(rows)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument(
        "--reference-date",
        type=date.fromisoformat,
        default=DEFAULT_REFERENCE_DATE,
        help="the trading day the master is for (default %(default)s)",
    )
    parser.add_argument("--output", type=Path, default=bundled_path(), help="CSV to write")
    args = parser.parse_args(argv)
    rows = build_rows(args.reference_date)
    write_csv(rows, args.output)
    size = args.output.stat().st_size
    print(f"wrote {len(rows)} instruments ({size / 1e6:.2f} MB) to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
