"""What the sample generator draws from: categories, brands, words of titles, and how often
each edge case occurs.

Category ids are each store's Amazon root browse node (what Keepa reports as rootCategory) of
the category, as config/fees_v2.toml [categories] maps them, with its sources; names are the
stores' own. Referral percentages, price and weight ranges are typical of their category.

What is in it: EUR prices 5–300 €, GB prices in pence (≈ EUR / 1.15), a few % of noise per
market, sales ranks 1–500 000, referral fees 7–15 %, FBA fees 2–8 €; about 7 % deliberate
arbitrage opportunities (one market 35–50 % cheaper, good sales ranks elsewhere); and edge
cases at fixed small rates (out of stock, no buy box, no FBA fees, no referral fee, unknown
sales rank, a product missing from one market, a placeholder object with no data).
"""

from __future__ import annotations

from dataclasses import dataclass

# Pence per euro cent: GB shelf prices are about the EUR price divided by 1.15.
EUR_PER_GBP = 1.15
# Shelf prices and sales ranks are drawn within these bounds.
MIN_PRICE_EUR_CENTS = 500
MAX_PRICE_EUR_CENTS = 30_000
MAX_SALES_RANK = 500_000


@dataclass(frozen=True)
class Category:
    key: str
    referral_pct: float
    price_eur: tuple[int, int]  # typical range, whole euros
    weight_g: tuple[int, int]
    nouns: tuple[str, ...]
    # Per market: (Amazon's root category node id there, the store's name for it).
    roots: dict[str, tuple[int, str]]


CATEGORIES: tuple[Category, ...] = (
    Category(
        "electronics",
        7.0,
        (15, 280),
        (80, 2500),
        ("Bluetooth Headphones", "Portable Speaker", "USB-C Charger", "Power Bank", "Webcam"),
        {
            "DE": (562066, "Elektronik & Foto"),
            "FR": (13921051, "High-Tech"),
            "IT": (412609031, "Elettronica"),
            "ES": (599370031, "Electrónica"),
            "GB": (560798, "Electronics & Photo"),
        },
    ),
    Category(
        "computers",
        7.0,
        (10, 250),
        (60, 4000),
        ("Mechanical Keyboard", "Wireless Mouse", "Portable SSD", "USB Hub", "Monitor Arm"),
        {
            "DE": (340843031, "Computer & Zubehör"),
            "FR": (340858031, "Informatique"),
            "IT": (425916031, "Informatica"),
            "ES": (667049031, "Informática"),
            "GB": (340831031, "Computers & Accessories"),
        },
    ),
    Category(
        "kitchen",
        15.0,
        (8, 200),
        (200, 9000),
        (
            "Chef Knife Set",
            "Non-Stick Frying Pan",
            "Electric Kettle",
            "Coffee Grinder",
            "Food Storage Boxes",
        ),
        {
            "DE": (3167641, "Küche, Haushalt & Wohnen"),
            "FR": (57004031, "Cuisine & Maison"),
            "IT": (524015031, "Casa e cucina"),
            "ES": (599391031, "Hogar y cocina"),
            "GB": (11052681, "Home & Kitchen"),
        },
    ),
    Category(
        "toys",
        15.0,
        (6, 150),
        (100, 5000),
        ("Building Blocks Set", "Wooden Puzzle", "Remote Control Car", "Board Game", "Plush Toy"),
        {
            "DE": (12950651, "Spielzeug"),
            "FR": (322086011, "Jeux et Jouets"),
            "IT": (523997031, "Giochi e giocattoli"),
            "ES": (599385031, "Juguetes y juegos"),
            "GB": (468292, "Toys & Games"),
        },
    ),
    Category(
        "sports",
        15.0,
        (8, 220),
        (100, 12000),
        (
            "Yoga Mat",
            "Adjustable Dumbbells",
            "Cycling Gloves",
            "Trekking Poles",
            "Insulated Bottle",
        ),
        {
            "DE": (16435051, "Sport & Freizeit"),
            "FR": (325614031, "Sports et Loisirs"),
            "IT": (524012031, "Sport e tempo libero"),
            "ES": (2454136031, "Deportes y aire libre"),
            "GB": (318949011, "Sports & Outdoors"),
        },
    ),
    Category(
        "beauty",
        12.0,
        (5, 120),
        (50, 1500),
        (
            "Hair Dryer",
            "Electric Toothbrush",
            "Facial Cleansing Brush",
            "Beard Trimmer",
            "Curling Iron",
        ),
        {
            "DE": (64187031, "Drogerie & Körperpflege"),
            "FR": (197858031, "Beauté et Parfum"),
            "IT": (6198082031, "Bellezza"),
            "ES": (6198054031, "Belleza"),
            "GB": (117332031, "Beauty"),
        },
    ),
    Category(
        "tools",
        12.0,
        (10, 300),
        (150, 15000),
        ("Cordless Drill", "Socket Wrench Set", "Laser Level", "Multi-Tool", "Stud Finder"),
        {
            "DE": (80084031, "Baumarkt"),
            "FR": (590748031, "Bricolage"),
            "IT": (2454160031, "Fai da te"),
            "ES": (2454133031, "Bricolaje y herramientas"),
            "GB": (79903031, "DIY & Tools"),
        },
    ),
    Category(
        "office",
        15.0,
        (5, 120),
        (50, 6000),
        ("Label Printer", "Desk Organiser", "Fountain Pen", "Paper Shredder", "Whiteboard"),
        {
            "DE": (192416031, "Bürobedarf & Schreibwaren"),
            "FR": (192419031, "Fournitures de bureau"),
            "IT": (3606310031, "Cancelleria e prodotti per ufficio"),
            "ES": (3628728031, "Oficina y papelería"),
            "GB": (192413031, "Stationery & Office Supplies"),
        },
    ),
)

BRANDS = (
    "Nordvik",
    "Altura",
    "Brixon",
    "Vellano",
    "Kestrel",
    "Orbis",
    "Lumo",
    "Tessaro",
    "Quillan",
    "Fjordal",
    "Maribel",
    "Corvan",
    "Hestia",
    "Zentro",
    "Arvela",
    "Pellmark",
)
ADJECTIVES = ("Compact", "Pro", "Premium", "Essential", "Ultra", "Classic", "Smart", "Eco")
COLOURS = ("Black", "White", "Grey", "Blue", "Green", "Red", "Silver")


@dataclass(frozen=True)
class EdgeCaseRates:
    """How often each special case occurs; per product or per (product, market)."""

    arbitrage: float = 0.07  # per product: one market 35-50 % cheaper
    absent_market: float = 0.04  # per product: missing from one market's `products`
    placeholder: float = 0.01  # per product: one market answers an object without data
    out_of_stock: float = 0.03  # per market: AMAZON and NEW (and the buy box) -1
    no_buy_box: float = 0.04  # per market: BUY_BOX_SHIPPING -1 or -2
    no_fba_fees: float = 0.04  # per market: fbaFees null
    no_referral_fee: float = 0.04  # per market: referralFeePercentage null
    unknown_sales_rank: float = 0.03  # per market: SALES -1


EDGE_CASE_KINDS = (
    "absent_market",
    "placeholder",
    "out_of_stock",
    "no_buy_box",
    "no_fba_fees",
    "no_referral_fee",
    "unknown_sales_rank",
)


@dataclass(frozen=True)
class SignalArchetypeRates:
    """How often each kind of listing occurs in Keepa's statistics (per product).

    The rest are steady sellers: 30/90/180-day averages within a few % of today's prices, rank
    drops in line with the sales rank, rarely out of stock, Amazon's buy box share matching
    whether it sells the item.
    """

    dead: float = 0.10  # few rank drops, out of stock much of the 90 days
    spike: float = 0.10  # the dearest market's price 35-90 % above its 90-day average
    amazon_dominated: float = 0.20  # of the products Amazon sells: Amazon holds the buy box 70-98 %


SIGNAL_ARCHETYPES = ("steady", "spike", "dead", "amazon_dominated")
