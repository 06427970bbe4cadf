import pytest

from actors.env.actions import Action, ActionError, format_action, parse_action, quote


@pytest.mark.parametrize(
    "text, expected",
    [
        ('click("submit")', Action("click", ref="submit")),
        ('  click( "Ok" )  ', Action("click", ref="Ok")),
        ('click("say \\"hi\\"")', Action("click", ref='say "hi"')),
        ('click("a\\\\b")', Action("click", ref="a\\b")),
        ('click("")', Action("click", ref="")),
        (
            'type("Username", "bob smith")',
            Action("type", ref="Username", arg="bob smith"),
        ),
        ('type("name","")', Action("type", ref="name", arg="")),
        (
            'select("Color", "Red, dark")',
            Action("select", ref="Color", arg="Red, dark"),
        ),
        ('press("Enter")', Action("press", arg="Enter")),
        ("scroll(down)", Action("scroll", arg="down")),
        ('scroll("up")', Action("scroll", arg="up")),
    ],
)
def test_parse_text_mode(text, expected):
    assert parse_action(text, "text") == expected


@pytest.mark.parametrize(
    "text, expected",
    [
        ("click(12)", Action("click", ref=12)),
        ("click( 3 )", Action("click", ref=3)),
        ('type(5, "Myron")', Action("type", ref=5, arg="Myron")),
        ('select(7, "Red")', Action("select", ref=7, arg="Red")),
        ('press("Tab")', Action("press", arg="Tab")),
        ("scroll(up)", Action("scroll", arg="up")),
    ],
)
def test_parse_id_mode(text, expected):
    assert parse_action(text, "id") == expected


@pytest.mark.parametrize(
    "text, mode",
    [
        ("", "text"),
        ("foo", "text"),
        ("click(12)", "text"),  # ids are not refs in text mode
        ('click("submit")', "id"),  # and text is not a ref in id mode
        ("click(submit)", "text"),
        ("click()", "id"),
        ('click("unterminated)', "text"),
        ('click("a" "b")', "text"),
        ('click("ok") and then more', "text"),
        ("click(1.5)", "id"),
        ("type(5)", "id"),
        ("type(5, Myron)", "id"),
        ("press()", "text"),
        ('press("")', "text"),
        ("scroll(left)", "text"),
        ('drag("a", "b")', "text"),
    ],
)
def test_parse_rejects(text, mode):
    with pytest.raises(ActionError):
        parse_action(text, mode)


def test_error_message_names_the_expected_ref():
    with pytest.raises(ActionError, match="integer element ref"):
        parse_action('click("ok")', "id")
    with pytest.raises(ActionError, match="quoted element text"):
        parse_action("click(4)", "text")


def test_unknown_ref_mode():
    with pytest.raises(ValueError, match="unknown ref_mode 'xpath'"):
        parse_action("scroll(down)", "xpath")  # valid in either mode: only the mode can be refused


@pytest.mark.parametrize(
    "action, mode",
    [
        (Action("click", ref='say "hi" \\ now'), "text"),
        (Action("type", ref="Name", arg='a "quoted" word'), "text"),
        (Action("select", ref=4, arg="Blue"), "id"),
        (Action("click", ref=31), "id"),
        (Action("press", arg="Enter"), "id"),
        (Action("scroll", arg="down"), "text"),
    ],
)
def test_format_round_trips(action, mode):
    assert parse_action(format_action(action, mode), mode) == action


def test_quote():
    assert quote("submit") == '"submit"'
    assert quote('a"b\\c') == '"a\\"b\\\\c"'
