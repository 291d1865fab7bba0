"""A sample company site (`/demo/site`) with the live-chat widget embedded the way a customer
would embed it: one `<script>` tag. For trying the chat end to end and for browser tests.

The page is standalone (no staff layout): `?lang=en|ja` picks its language, else the
browser's Accept-Language, else Japanese; `?team=` is handed to the widget's `data-team`.
"""

from __future__ import annotations

from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import Route

from helpdesk.web.render import render

LANGUAGES = ("ja", "en")
DEFAULT_LANGUAGE = "ja"
MAX_TEAM_CHARS = 120  # as /ws/chat accepts

TEXT = {
    "ja": {
        "store": "サンプルストア",
        "tagline": "毎日の暮らしに、ちょうどいい道具を。",
        "nav": ["新着", "キッチン", "インテリア", "お問い合わせ"],
        "products_title": "おすすめ商品",
        "products": [
            (
                "ステンレス保温ボトル 500ml",
                "朝の温かさが夕方まで続く、真空二重構造のボトル。",
                "¥2,980",
            ),
            ("ひのきのまな板", "国産ひのきを使った、軽くて手入れのしやすいまな板。", "¥4,400"),
            (
                "リネンのクッションカバー",
                "洗うほど柔らかくなる、リトアニアリネンのカバー。",
                "¥3,300",
            ),
        ],
        "help_title": "お困りですか?",
        "help_text": "右下のチャットボタンから担当者に質問できます。"
        "担当者が不在のときはメッセージを残していただければメールでご返信します。",
        "footer": "© サンプルストア株式会社 ・ これはデモ用のサイトです。",
        "chat_title": "サンプルストア サポート",
        "switch": "English",
    },
    "en": {
        "store": "Example Store",
        "tagline": "Good tools for everyday life.",
        "nav": ["New", "Kitchen", "Interior", "Contact"],
        "products_title": "Featured products",
        "products": [
            (
                "Insulated steel bottle, 500 ml",
                "Double-walled: your morning tea is still warm at dusk.",
                "¥2,980",
            ),
            ("Hinoki cutting board", "Light Japanese cypress, easy to care for.", "¥4,400"),
            ("Linen cushion cover", "Lithuanian linen that gets softer with every wash.", "¥3,300"),
        ],
        "help_title": "Need help?",
        "help_text": "Ask us anything with the chat button at the bottom right. "
        "When no one is available, leave a message and we will reply by email.",
        "footer": "© Example Store Inc. · This is a demo site.",
        "chat_title": "Example Store support",
        "switch": "日本語",
    },
}


def site_language(request: Request) -> str:
    """`?lang=`, else the first of ja/en in Accept-Language (by weight), else Japanese."""
    asked = request.query_params.get("lang")
    if asked in LANGUAGES:
        return str(asked)
    wanted: list[tuple[float, int, str]] = []
    for i, part in enumerate((request.headers.get("accept-language") or "").split(",")):
        tag, _, q = part.strip().partition(";q=")
        try:
            weight = float(q) if q else 1.0
        except ValueError:
            weight = 0.0
        primary = tag.strip().split("-")[0].split("_")[0].lower()
        if primary in LANGUAGES and weight > 0:
            wanted.append((-weight, i, primary))
    return min(wanted)[2] if wanted else DEFAULT_LANGUAGE


async def demo_site(request: Request) -> HTMLResponse:
    lang = site_language(request)
    team = (request.query_params.get("team") or "").strip()[:MAX_TEAM_CHARS]
    other = "en" if lang == "ja" else "ja"
    switch = "/demo/site?" + urlencode({"lang": other, **({"team": team} if team else {})})
    return render(
        request,
        "demo/site.html",
        {"lang": lang, "team": team, "t": TEXT[lang], "switch_url": switch},
    )


routes = [Route("/demo/site", demo_site, methods=["GET"])]
