"""What FETCH returns about a stored message: ENVELOPE, BODY/BODYSTRUCTURE, BODY[section], SEARCH text.

Expected values are written out in IMAP syntax. Where RFC 3501 leaves room, the expectations follow
Dovecot (whose own test message and imaptest's FETCH scripts are reproduced here, with CRLF line
ends, and compared case-insensitively since we upper-case types as the RFC 3501 examples do).
"""

from __future__ import annotations

import base64
import random
import textwrap

import pytest

from mssante_operator.imap import message as message_module
from mssante_operator.imap.message import MessageStructure, decode_words, parse_addresses
from mssante_operator.imap.wire import encode


def crlf(text: str) -> bytes:
    """A message written as an indented triple-quoted string, with CRLF line ends."""
    return textwrap.dedent(text).lstrip("\n").replace("\n", "\r\n").encode()


def envelope(raw: bytes) -> bytes:
    return encode(MessageStructure.parse(raw).envelope())


def bodystructure(raw: bytes, extensible: bool = True) -> bytes:
    return encode(MessageStructure.parse(raw).bodystructure(extensible))


# --- sample messages ---------------------------------------------------------------------------------

# The message behind the RFC 3501 FETCH example (section 8), with a short body.
RFC3501 = crlf("""
    Date: Wed, 17 Jul 1996 02:23:25 -0700 (PDT)
    From: Terry Gray <gray@cac.washington.edu>
    Subject: IMAP4rev1 WG mtg summary and minutes
    To: imap@cac.washington.edu
    cc: minutes@CNRI.Reston.VA.US, John Klensin <KLENSIN@MIT.EDU>
    Message-Id: <B27397-0100000@cac.washington.edu>
    MIME-Version: 1.0
    Content-Type: TEXT/PLAIN; CHARSET=US-ASCII

    Minutes of the IMAP4rev1 working group meeting.
    Attendees: see below.
    """)

PDF = b"%PDF-1.4\n" + bytes(range(256)) * 2 + b"\n%%EOF\n"
PDF_B64 = base64.encodebytes(PDF).replace(b"\n", b"\r\n")  # 76-character lines, CRLF

# A lab report: a quoted-printable text and a base64 PDF (the common case on MSSanté).
LAB_TEXT = b"Bonjour Docteur,\r\nVeuillez trouver ci-joint le compte rendu de r=C3=A9sultats."
LAB = crlf('''
    From: "Laboratoire Biolab, site de Lyon" <resultats@biolab.mssante.fr>
    To: Dr Jeanne Martin <jeanne.martin@medecin.mssante.fr>
    Subject: =?UTF-8?Q?R=C3=A9sultats_d'analyses?=
    Date: Tue, 14 May 2024 09:12:44 +0200
    Message-ID: <20240514091244.4F2A@biolab.mssante.fr>
    MIME-Version: 1.0
    Content-Type: multipart/mixed; boundary="=_MSS_b1"

    This is a multi-part message in MIME format.
    --=_MSS_b1
    Content-Type: text/plain; charset=UTF-8
    Content-Transfer-Encoding: quoted-printable

    ''') + LAB_TEXT + b"\r\n" + crlf('''
    --=_MSS_b1
    Content-Type: application/pdf; name="CR_biologie.pdf"
    Content-Disposition: attachment; filename="CR_biologie.pdf"
    Content-Transfer-Encoding: base64

    ''') + PDF_B64 + b"--=_MSS_b1--\r\n"

# multipart/alternative inside multipart/mixed, with an attachment and a Latin-1 HTML part.
ALTERNATIVE = crlf("""
    From: secretariat@cabinet.mssante.fr
    To: dr.durand@hopital.mssante.fr
    Subject: Courrier de sortie
    Date: Wed, 15 May 2024 16:00:00 +0200
    MIME-Version: 1.0
    Content-Type: multipart/mixed;
     boundary="outer"

    --outer
    Content-Type: multipart/alternative; boundary="inner"

    --inner
    Content-Type: text/plain; charset="iso-8859-1"
    Content-Transfer-Encoding: quoted-printable

    Patient sorti le 15/05, traitement inchang=E9.
    --inner
    Content-Type: text/html; charset=utf-8
    Content-Transfer-Encoding: base64

    PHA+UGF0aWVudCBzb3J0aSwgdHJhaXRlbWVudCBpbmNoYW5nw6kuPC9wPg==
    --inner--

    --outer
    Content-Type: text/csv; name=constantes.csv
    Content-Disposition: attachment; filename=constantes.csv
    Content-ID: <csv1@cabinet>
    Content-Description: Constantes
    Content-Language: fr

    date;ta;fc
    15/05;12/8;72

    --outer--
    """)

# A forwarded message (message/rfc822) whose own body is multipart.
FORWARD = crlf("""
    From: Dr A <a@chu.mssante.fr>
    To: Dr B <b@chu.mssante.fr>
    Subject: Fwd: avis
    Date: Thu, 16 May 2024 08:00:00 +0200
    MIME-Version: 1.0
    Content-Type: multipart/mixed; boundary=fwd

    --fwd
    Content-Type: text/plain; charset=us-ascii

    Voir ci-dessous.
    --fwd
    Content-Type: message/rfc822
    Content-Disposition: inline

    From: Dr C <c@clinique.mssante.fr>
    To: Dr A <a@chu.mssante.fr>
    Subject: avis
    Date: Wed, 15 May 2024 18:00:00 +0200
    Message-ID: <avis-1@clinique>
    Content-Type: multipart/mixed; boundary=in

    --in
    Content-Type: text/plain

    Avis favorable.
    --in
    Content-Type: image/png; name=ecg.png
    Content-Transfer-Encoding: base64

    iVBORw0KGgo=
    --in--
    --fwd--
    """)


# --- ENVELOPE ------------------------------------------------------------------------------------------


def test_envelope_rfc3501_example():
    assert envelope(RFC3501) == (
        b'("Wed, 17 Jul 1996 02:23:25 -0700 (PDT)" "IMAP4rev1 WG mtg summary and minutes" '
        b'(("Terry Gray" NIL "gray" "cac.washington.edu")) (("Terry Gray" NIL "gray" "cac.washington.edu")) '
        b'(("Terry Gray" NIL "gray" "cac.washington.edu")) ((NIL NIL "imap" "cac.washington.edu")) '
        # RFC 3501's example prints a space between the two cc addresses; its grammar (1*address) has none.
        b'((NIL NIL "minutes" "CNRI.Reston.VA.US")("John Klensin" NIL "KLENSIN" "MIT.EDU")) NIL NIL '
        b'"<B27397-0100000@cac.washington.edu>")'
    )


def test_envelope_of_the_lab_report_keeps_the_encoded_subject_and_the_quoted_name():
    assert envelope(LAB) == (
        b'("Tue, 14 May 2024 09:12:44 +0200" "=?UTF-8?Q?R=C3=A9sultats_d\'analyses?=" '
        b'(("Laboratoire Biolab, site de Lyon" NIL "resultats" "biolab.mssante.fr")) '
        b'(("Laboratoire Biolab, site de Lyon" NIL "resultats" "biolab.mssante.fr")) '
        b'(("Laboratoire Biolab, site de Lyon" NIL "resultats" "biolab.mssante.fr")) '
        b'(("Dr Jeanne Martin" NIL "jeanne.martin" "medecin.mssante.fr")) NIL NIL NIL '
        b'"<20240514091244.4F2A@biolab.mssante.fr>")'
    )


def test_envelope_all_fields_in_order():
    raw = crlf("""
        Message-ID: <msg@id>
        In-Reply-To: <reply@to.id>
        Date: Sat, 01 Feb 2007 01:02:03 +0200
        Subject: subject header
        From: From Real <fromuser@fromdomain.org>
        To: To Real <touser@todomain.org>
        Cc: Cc Real <ccuser@ccdomain.org>
        Bcc: Bcc Real <bccuser@bccdomain.org>
        Sender: Sender Real <senderuser@senderdomain.org>
        Reply-To: ReplyTo Real <replytouser@replytodomain.org>

        body
        """)
    assert envelope(raw) == (
        b'("Sat, 01 Feb 2007 01:02:03 +0200" "subject header" (("From Real" NIL "fromuser" "fromdomain.org")) '
        b'(("Sender Real" NIL "senderuser" "senderdomain.org")) (("ReplyTo Real" NIL "replytouser" '
        b'"replytodomain.org")) (("To Real" NIL "touser" "todomain.org")) (("Cc Real" NIL "ccuser" '
        b'"ccdomain.org")) (("Bcc Real" NIL "bccuser" "bccdomain.org")) "<reply@to.id>" "<msg@id>")'
    )


def test_sender_and_reply_to_default_to_from_when_absent_or_empty():
    absent = crlf("""
        From: user@domain (Real Name)

        body
        """)
    empty = crlf("""
        From: user@domain (Real Name)
        Sender:\x20
        Reply-To:

        body
        """)
    expected = (
        b'(NIL NIL (("Real Name" NIL "user" "domain")) (("Real Name" NIL "user" "domain")) '
        b'(("Real Name" NIL "user" "domain")) NIL NIL NIL NIL NIL)'
    )
    assert envelope(absent) == expected
    assert envelope(empty) == expected


def test_absent_strings_are_nil_and_present_but_empty_ones_are_empty():
    raw = crlf("""
        Subject:
        Date:\x20
        From: a@b.c

        x
        """)
    assert envelope(raw).startswith(b'("" "" ')
    assert envelope(b"From: a@b.c\r\n\r\nx").startswith(b"(NIL NIL ")


def test_no_header_at_all_is_an_all_nil_envelope():
    assert envelope(b"\r\njust a body\r\n") == b"(NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL)"
    assert envelope(b"") == b"(NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL)"


def test_group_syntax():
    raw = crlf("""
        From: user@domain (Real Name)
        To: group: g1@d1.org, g2@d2.org;, group2: g3@d3.org;
        Cc: undisclosed-recipients:;
        Bcc: "Service de cardiologie": Dr X <x@chu.fr>;

        body
        """)
    env = MessageStructure.parse(raw).envelope()
    assert encode(env[5]) == (
        b'((NIL NIL "group" NIL)(NIL NIL "g1" "d1.org")(NIL NIL "g2" "d2.org")(NIL NIL NIL NIL)'
        b'(NIL NIL "group2" NIL)(NIL NIL "g3" "d3.org")(NIL NIL NIL NIL))'
    )
    assert encode(env[6]) == b'((NIL NIL "undisclosed-recipients" NIL)(NIL NIL NIL NIL))'
    assert encode(env[7]) == b'((NIL NIL "Service de cardiologie" NIL)("Dr X" NIL "x" "chu.fr")(NIL NIL NIL NIL))'


def test_unterminated_group_is_closed():
    assert parse_addresses("team: a@b.c, d@e.f") == [
        [None, None, "team", None], [None, None, "a", "b.c"], [None, None, "d", "e.f"], [None, None, None, None],
    ]


def test_source_route():
    assert envelope(b"From: <@route:user@domain>\r\n\r\nx") == (
        b'(NIL NIL ((NIL "@route" "user" "domain")) ((NIL "@route" "user" "domain")) '
        b'((NIL "@route" "user" "domain")) NIL NIL NIL NIL NIL)'
    )
    assert parse_addresses("Joe <@a.org,@b.org:joe@c.org>") == [["Joe", "@a.org,@b.org", "joe", "c.org"]]


@pytest.mark.parametrize(("value", "expected"), [
    ("john@example.com", [[None, None, "john", "example.com"]]),
    ("John Q. Public <john@example.com>", [["John Q. Public", None, "john", "example.com"]]),
    ('"Public, John" <john@example.com>', [["Public, John", None, "john", "example.com"]]),
    ('"Dr \\"Doc\\" Who" <who@tardis.org>', [['Dr "Doc" Who', None, "who", "tardis.org"]]),
    ("john@example.com (John Public)", [["John Public", None, "john", "example.com"]]),
    ("John (the boss) Public <john@example.com>", [["John Public", None, "john", "example.com"]]),
    ("<john@example.com>", [[None, None, "john", "example.com"]]),
    ('"john smith"@example.com', [[None, None, "john smith", "example.com"]]),
    ("postmaster@[192.0.2.1]", [[None, None, "postmaster", "[192.0.2.1]"]]),
    ("john . doe @ example . com", [[None, None, "john.doe", "example.com"]]),
    ("postmaster", [[None, None, "postmaster", "MISSING_DOMAIN"]]),
    ("@example.com", [[None, None, "MISSING_MAILBOX", "example.com"]]),
    ("Nobody <>", [["Nobody", None, "MISSING_MAILBOX", "MISSING_DOMAIN"]]),
    ("a@b.c,, d@e.f,", [[None, None, "a", "b.c"], [None, None, "d", "e.f"]]),
    ("=?utf-8?q?Andr=C3=A9?= Dupont <andre@x.fr>", [["=?utf-8?q?Andr=C3=A9?= Dupont", None, "andre", "x.fr"]]),
    ("Jean Dupont jean@x.fr", [["Jean Dupont", None, "jean", "x.fr"]]),
    ("Broken <a@b.c", [["Broken", None, "a", "b.c"]]),
    ("", []),
    ("   ", []),
])
def test_address_parsing(value, expected):
    assert parse_addresses(value) == expected


def test_address_list_present_but_empty_is_nil():
    env = MessageStructure.parse(b"From: a@b.c\r\nTo:\r\nCc: ,\r\n\r\nx").envelope()
    assert env[5] is None and env[6] is None


def test_folded_header_values_are_unfolded_not_decoded():
    raw = crlf("""
        Subject: =?iso-8859-1?q?Compte_rendu_op=E9ratoire?=
         =?iso-8859-1?q?_de_M=2E_Dupont?=
        From: "Service
         de chirurgie" <chir@chu.fr>

        x
        """)
    env = MessageStructure.parse(raw).envelope()
    assert env[1] == "=?iso-8859-1?q?Compte_rendu_op=E9ratoire?= =?iso-8859-1?q?_de_M=2E_Dupont?="
    assert env[2] == [["Service de chirurgie", None, "chir", "chu.fr"]]


def test_raw_utf8_headers_are_sent_as_literals():
    raw = "From: Hélène Durand <helene@chu.fr>\r\nSubject: Résultats\r\n\r\nx".encode()
    assert envelope(raw) == (
        b'(NIL {10}\r\nR\xc3\xa9sultats (({15}\r\nH\xc3\xa9l\xc3\xa8ne Durand NIL "helene" "chu.fr")) '
        b'(({15}\r\nH\xc3\xa9l\xc3\xa8ne Durand NIL "helene" "chu.fr")) '
        b'(({15}\r\nH\xc3\xa9l\xc3\xa8ne Durand NIL "helene" "chu.fr")) NIL NIL NIL NIL NIL)'
    )


def test_eight_bit_junk_in_headers_is_returned_byte_for_byte():
    raw = b"From: a@b.c\r\nSubject: r\xe9sultat \xff\xfe\r\n\r\nx"
    assert envelope(raw).startswith(b"(NIL {11}\r\nr\xe9sultat \xff\xfe ((NIL NIL")


def test_first_occurrence_of_a_repeated_header_counts():
    raw = b"Subject: one\r\nSubject: two\r\nFrom: a@b.c\r\nFrom: d@e.f\r\n\r\nx"
    env = MessageStructure.parse(raw).envelope()
    assert env[1] == "one" and env[2] == [[None, None, "a", "b.c"]]


def test_header_names_are_case_insensitive_and_may_have_space_before_the_colon():
    env = MessageStructure.parse(b"SUBJECT : hi\r\nfrom: a@b.c\r\nMESSAGE-ID: <x@y>\r\n\r\n").envelope()
    assert env[1] == "hi" and env[2] == [[None, None, "a", "b.c"]] and env[9] == "<x@y>"


def test_nul_and_stray_cr_are_removed_from_envelope_strings():
    env = MessageStructure.parse(b"Subject: a\x00b\rc\r\n\r\n").envelope()
    assert env[1] == "abc"


# --- BODY / BODYSTRUCTURE ---------------------------------------------------------------------------------


def test_bodystructure_rfc3501_example_style():
    assert bodystructure(RFC3501, extensible=False) == b'("TEXT" "PLAIN" ("CHARSET" "US-ASCII") NIL NIL "7BIT" 72 2)'
    assert bodystructure(RFC3501) == b'("TEXT" "PLAIN" ("CHARSET" "US-ASCII") NIL NIL "7BIT" 72 2 NIL NIL NIL NIL)'


def test_bodystructure_of_the_lab_report():
    assert len(LAB_TEXT) == 78 and len(PDF_B64) - 2 == 722  # the CRLF before a boundary is not the part's
    assert bodystructure(LAB) == (
        b'(("TEXT" "PLAIN" ("CHARSET" "UTF-8") NIL NIL "QUOTED-PRINTABLE" 78 1 NIL NIL NIL NIL)'
        b'("APPLICATION" "PDF" ("NAME" "CR_biologie.pdf") NIL NIL "BASE64" 722 NIL '
        b'("ATTACHMENT" ("FILENAME" "CR_biologie.pdf")) NIL NIL) "MIXED" ("BOUNDARY" "=_MSS_b1") NIL NIL NIL)'
    )
    assert bodystructure(LAB, extensible=False) == (
        b'(("TEXT" "PLAIN" ("CHARSET" "UTF-8") NIL NIL "QUOTED-PRINTABLE" 78 1)'
        b'("APPLICATION" "PDF" ("NAME" "CR_biologie.pdf") NIL NIL "BASE64" 722) "MIXED")'
    )


def test_bodystructure_alternative_inside_mixed_with_extension_fields():
    assert bodystructure(ALTERNATIVE) == (
        b'((("TEXT" "PLAIN" ("CHARSET" "iso-8859-1") NIL NIL "QUOTED-PRINTABLE" 46 0 NIL NIL NIL NIL)'
        b'("TEXT" "HTML" ("CHARSET" "utf-8") NIL NIL "BASE64" 60 0 NIL NIL NIL NIL) "ALTERNATIVE" '
        b'("BOUNDARY" "inner") NIL NIL NIL)'
        b'("TEXT" "CSV" ("NAME" "constantes.csv" "CHARSET" "US-ASCII") "<csv1@cabinet>" "Constantes" "7BIT" 27 2 '
        b'NIL ("ATTACHMENT" ("FILENAME" "constantes.csv")) ("fr") NIL) "MIXED" ("BOUNDARY" "outer") NIL NIL NIL)'
    )


def test_bodystructure_of_a_forwarded_message():
    structure = MessageStructure.parse(FORWARD)
    inner = structure.section((2,), None)
    assert encode(structure.bodystructure()) == (
        b'(("TEXT" "PLAIN" ("CHARSET" "us-ascii") NIL NIL "7BIT" 16 0 NIL NIL NIL NIL)'
        b'("MESSAGE" "RFC822" NIL NIL NIL "7BIT" ' + str(len(inner)).encode() + b" "
        b'("Wed, 15 May 2024 18:00:00 +0200" "avis" (("Dr C" NIL "c" "clinique.mssante.fr")) '
        b'(("Dr C" NIL "c" "clinique.mssante.fr")) (("Dr C" NIL "c" "clinique.mssante.fr")) '
        b'(("Dr A" NIL "a" "chu.mssante.fr")) NIL NIL NIL "<avis-1@clinique>") '
        b'(("TEXT" "PLAIN" ("CHARSET" "US-ASCII") NIL NIL "7BIT" 15 0 NIL NIL NIL NIL)'
        b'("IMAGE" "PNG" ("NAME" "ecg.png") NIL NIL "BASE64" 12 NIL NIL NIL NIL) "MIXED" ("BOUNDARY" "in") '
        b'NIL NIL NIL) ' + str(inner.count(b"\n")).encode() + b' NIL ("INLINE" NIL) NIL NIL) "MIXED" '
        b'("BOUNDARY" "fwd") NIL NIL NIL)'
    )
    # The line end of the inner close-delimiter stays with the inner message even when the outer
    # boundary follows at once (Dovecot's reading).
    assert inner.endswith(b"--in--\r\n") and len(inner) == 351 and inner.count(b"\n") == 17
    assert encode(structure.bodystructure(False)).endswith(b'"MIXED") 17) "MIXED")')


def test_no_content_type_is_text_plain_us_ascii():
    raw = b"From: a@b.c\r\nSubject: hi\r\n\r\nhello\r\nworld\r\n"
    assert bodystructure(raw) == b'("TEXT" "PLAIN" ("CHARSET" "US-ASCII") NIL NIL "7BIT" 14 2 NIL NIL NIL NIL)'


@pytest.mark.parametrize("value", ["garbage", "text", "/plain", "text/", "text/plain garbage", ""])
def test_unparseable_content_type_is_text_plain(value):
    raw = f"Content-Type: {value}\r\n\r\nx".encode()
    assert bodystructure(raw, False) == b'("TEXT" "PLAIN" ("CHARSET" "US-ASCII") NIL NIL "7BIT" 1 0)'


def test_line_count_is_the_number_of_line_feeds():
    assert bodystructure(b"\r\nno final newline", False).endswith(b" 16 0)")
    assert bodystructure(b"\r\none\r\n", False).endswith(b" 5 1)")
    assert bodystructure(b"\r\n", False).endswith(b" 0 0)")


def test_types_and_encodings_are_upper_cased_values_kept():
    raw = (
        b'Content-Type: Application/X-HL7; Charset="ISO-8859-15"; Version=2.5\r\n'
        b"Content-Transfer-Encoding: Base64\r\n\r\n"
    )
    assert bodystructure(raw, False) == (
        b'("APPLICATION" "X-HL7" ("CHARSET" "ISO-8859-15" "VERSION" "2.5") NIL NIL "BASE64" 0)'
    )


def test_invalid_transfer_encoding_is_7bit():
    raw = b"Content-Transfer-Encoding: ?invalid\r\n\r\nx"
    assert bodystructure(raw, False) == b'("TEXT" "PLAIN" ("CHARSET" "US-ASCII") NIL NIL "7BIT" 1 0)'


def test_parameters_with_comments_quotes_and_semicolons():
    raw = b'Content-Type: text/plain (plain text); charset=utf-8 (of course); name="a;b \\"c\\".txt"; junk\r\n\r\n'
    assert bodystructure(raw, False) == (
        b'("TEXT" "PLAIN" ("CHARSET" "utf-8" "NAME" "a;b \\"c\\".txt") NIL NIL "7BIT" 0 0)'
    )


def test_rfc2231_continuations_are_merged_and_left_encoded():
    raw = crlf("""
        Content-Type: application/pdf;
         name*0="compte rendu ";
         name*1="op\xe9ratoire.pdf"
        Content-Disposition: attachment;
         filename*0*=utf-8''compte%20rendu%20;
         filename*1*=op%C3%A9ratoire;
         filename*2=".pdf"

        """)
    assert bodystructure(raw) == (
        b'("APPLICATION" "PDF" ("NAME" {28}\r\ncompte rendu op\xc3\xa9ratoire.pdf) NIL NIL "7BIT" 0 NIL '
        b'("ATTACHMENT" ("FILENAME*" "utf-8\'\'compte%20rendu%20op%C3%A9ratoire.pdf")) NIL NIL)'
    )


def test_rfc2231_single_extended_and_incomplete_continuations():
    raw = (
        b"Content-Type: text/plain; title*=us-ascii'en'This%20is%20%2A%2A%2Afun%2A%2A%2A; "
        b'a*1="x"; a*2="y"; b*0="p"; b*1*=%41\r\n\r\n'
    )
    assert bodystructure(raw, False) == (
        b'("TEXT" "PLAIN" ("TITLE*" "us-ascii\'en\'This%20is%20%2A%2A%2Afun%2A%2A%2A" "A*1" "x" "A*2" "y" '
        b'"B*" "\'\'p%41" "CHARSET" "US-ASCII") NIL NIL "7BIT" 0 0)'
    )


def test_content_language_list_and_location():
    raw = b"Content-Language: fr-FR, en (english)\r\nContent-Location: http://x.fr/a.txt\r\nContent-MD5: abc=\r\n\r\n"
    assert bodystructure(raw).endswith(b' 0 0 "abc=" NIL ("fr-FR" "en") "http://x.fr/a.txt")')


def test_disposition_without_parameters():
    assert bodystructure(b"Content-Disposition: INLINE\r\n\r\n").endswith(b' NIL ("INLINE" NIL) NIL NIL)')
    assert bodystructure(b"Content-Disposition: ;filename=x\r\n\r\n").endswith(b" NIL NIL NIL NIL)")


def test_dovecot_bodystructure_test_message():
    """The message of Dovecot's test-imap-bodystructure.c and its expected BODYSTRUCTURE and BODY."""
    raw = (
        b'From: user@domain.org\nDate: Sat, 24 Mar 2007 23:00:00 +0200\nMime-Version: 1.0\n'
        b'Content-Type: multipart/mixed; boundary="foo\n bar"\n\nRoot MIME prologue\n\n--foo bar\n'
        b'Content-Type: text/x-myown; charset=us-ascii; foo="quoted\\"string"\nContent-ID: <foo@example.com>\n'
        b'Content-MD5: Q2hlY2sgSW50ZWdyaXR5IQ==\nContent-Disposition: inline; foo=bar\n'
        b'Content-Description: hellodescription\nContent-Language: en, fi, se\n'
        b'Content-Location: http://example.com/test.txt\n\nhello\n\n--foo bar\nContent-Type: message/rfc822\n\n'
        b'From: sub@domain.org\nTo: sub-to1@domain.org, sub-to2@domain.org\n'
        b'Date: Sun, 12 Aug 2012 12:34:56 +0300\nSubject: submsg\n'
        b'Content-Type: multipart/alternative; boundary="sub1"\n\nSub MIME prologue\n--sub1\n'
        b'Content-Type: text/html\nContent-Transfer-Encoding: 8bit\n\n<p>Hello world</p>\n\n--sub1\n'
        b'Content-Type: text/plain\nContent-Transfer-Encoding: ?invalid\n\nHello another world\n\n--sub1--\n'
        b'Sub MIME epilogue\n\n--foo bar--\nRoot MIME epilogue\n'
    ).replace(b"\n", b"\r\n")  # Dovecot's sizes are counted with CRLF
    expected = (
        b'("text" "x-myown" ("charset" "us-ascii" "foo" "quoted\\"string") "<foo@example.com>" "hellodescription" '
        b'"7bit" 7 1 "Q2hlY2sgSW50ZWdyaXR5IQ==" ("inline" ("foo" "bar")) ("en" "fi" "se") '
        b'"http://example.com/test.txt")("message" "rfc822" NIL NIL NIL "7bit" 412 ("Sun, 12 Aug 2012 12:34:56 '
        b'+0300" "submsg" ((NIL NIL "sub" "domain.org")) ((NIL NIL "sub" "domain.org")) ((NIL NIL "sub" '
        b'"domain.org")) ((NIL NIL "sub-to1" "domain.org")(NIL NIL "sub-to2" "domain.org")) NIL NIL NIL NIL) '
        b'(("text" "html" ("charset" "us-ascii") NIL NIL "8bit" 20 1 NIL NIL NIL NIL)("text" "plain" '
        b'("charset" "us-ascii") NIL NIL "7bit" 21 1 NIL NIL NIL NIL) "alternative" ("boundary" "sub1") NIL NIL '
        b'NIL) 21 NIL NIL NIL NIL) "mixed" ("boundary" "foo bar") NIL NIL NIL'
    )
    expected_body = (
        b'("text" "x-myown" ("charset" "us-ascii" "foo" "quoted\\"string") "<foo@example.com>" "hellodescription" '
        b'"7bit" 7 1)("message" "rfc822" NIL NIL NIL "7bit" 412 ("Sun, 12 Aug 2012 12:34:56 +0300" "submsg" '
        b'((NIL NIL "sub" "domain.org")) ((NIL NIL "sub" "domain.org")) ((NIL NIL "sub" "domain.org")) '
        b'((NIL NIL "sub-to1" "domain.org")(NIL NIL "sub-to2" "domain.org")) NIL NIL NIL NIL) (("text" "html" '
        b'("charset" "us-ascii") NIL NIL "8bit" 20 1)("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 21 1) '
        b'"alternative") 21) "mixed"'
    )
    assert bodystructure(raw).lower() == b"(" + expected.lower() + b")"
    assert bodystructure(raw, False).lower() == b"(" + expected_body.lower() + b")"


def test_bodystructure_is_cached():
    pdf = base64.encodebytes(random.Random(1).randbytes(36_000)).replace(b"\n", b"\r\n")
    report = LAB.replace(PDF_B64, pdf)
    assert 49_000 < len(report) < 52_000
    structure = MessageStructure.parse(report)
    encode(structure.envelope())
    assert encode(structure.bodystructure()).startswith(b"(")
    assert structure.bodystructure() is structure.bodystructure()  # its cost: benchmarks/imap.py


# --- sections ----------------------------------------------------------------------------------------------


def test_whole_message_header_and_text():
    structure = MessageStructure.parse(LAB)
    header_end = LAB.index(b"\r\n\r\n") + 4
    assert structure.section((), None) == LAB
    assert structure.section((), "HEADER") == LAB[:header_end] == structure.header_bytes()
    assert structure.section((), "TEXT") == LAB[header_end:] == structure.text_bytes()
    assert structure.size == len(LAB)


def test_parts_of_the_lab_report_are_byte_exact():
    structure = MessageStructure.parse(LAB)
    assert structure.section((1,), None) == LAB_TEXT
    assert structure.section((2,), None) == PDF_B64[:-2]
    assert base64.b64decode(structure.section((2,), None)) == PDF
    assert structure.section((1,), "MIME") == (
        b"Content-Type: text/plain; charset=UTF-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
    )
    assert structure.section((2,), "MIME").startswith(b"Content-Type: application/pdf;")
    assert structure.section((2,), "MIME").endswith(b"base64\r\n\r\n")


def test_non_existent_parts_are_empty():
    structure = MessageStructure.parse(LAB)
    for parts, text in [((3,), None), ((0,), None), ((1, 1), None), ((1,), "HEADER"), ((1,), "TEXT"),
                        ((2, 1), "MIME"), ((), "MIME"), ((9, 9, 9), None), ((), "BOGUS")]:
        assert structure.section(parts, text) == b"", (parts, text)


def test_single_part_message_part_one_is_its_body():
    structure = MessageStructure.parse(RFC3501)
    assert structure.section((1,), None) == structure.text_bytes()
    assert structure.section((1,), "MIME") == structure.header_bytes()  # as Dovecot
    assert structure.section((2,), None) == b""
    assert structure.section((1, 1), None) == b""


def test_nested_part_numbers():
    structure = MessageStructure.parse(ALTERNATIVE)
    assert structure.section((1, 1), None) == b"Patient sorti le 15/05, traitement inchang=E9."
    assert structure.section((1, 2), None) == b"PHA+UGF0aWVudCBzb3J0aSwgdHJhaXRlbWVudCBpbmNoYW5nw6kuPC9wPg=="
    assert structure.section((1, 2), "MIME") == (
        b"Content-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n"
    )
    # A multipart part's body: preamble, boundaries and epilogue included.
    inside = ALTERNATIVE.split(b'"inner"\r\n\r\n')[1].split(b"\r\n\r\n--outer\r\n")[0]
    assert inside.startswith(b"--inner\r\n") and inside.endswith(b"--inner--")
    assert structure.section((1,), None) == inside + b"\r\n"
    assert structure.section((1,), "MIME") == b'Content-Type: multipart/alternative; boundary="inner"\r\n\r\n'
    assert structure.section((2,), None) == b"date;ta;fc\r\n15/05;12/8;72\r\n"


def test_message_rfc822_part_sections():
    structure = MessageStructure.parse(FORWARD)
    inner = structure.section((2,), None)
    assert inner.startswith(b"From: Dr C") and inner.endswith(b"--in--\r\n")
    assert structure.section((2,), "MIME") == b"Content-Type: message/rfc822\r\nContent-Disposition: inline\r\n\r\n"
    assert structure.section((2,), "HEADER") == inner[: inner.index(b"\r\n\r\n") + 4]
    assert structure.section((2,), "TEXT") == inner[inner.index(b"\r\n\r\n") + 4 :]
    assert structure.section((2, 1), None) == b"Avis favorable."
    assert structure.section((2, 1), "MIME") == b"Content-Type: text/plain\r\n\r\n"
    assert structure.section((2, 2), None) == b"iVBORw0KGgo="
    assert structure.section((2, 3), None) == b""
    assert structure.section((2,), "HEADER.FIELDS", ("subject", "X-None")) == b"Subject: avis\r\n\r\n"
    assert structure.section((2,), "header.fields.not", ("From", "TO", "date", "content-type")) == (
        b"Subject: avis\r\nMessage-ID: <avis-1@clinique>\r\n\r\n"
    )


def test_header_fields_keep_folding_and_order_and_end_with_the_blank_line():
    raw = crlf("""
        Received: from a
        \tby b; Tue, 14 May 2024 09:00:00 +0200
        From: a@b.c
        subject: Folded
          subject
        To: d@e.f
        Received: from c by d

        body
        """)
    structure = MessageStructure.parse(raw)
    assert structure.section((), "HEADER.FIELDS", ("SUBJECT", "received")) == (
        b"Received: from a\r\n\tby b; Tue, 14 May 2024 09:00:00 +0200\r\nsubject: Folded\r\n  subject\r\n"
        b"Received: from c by d\r\n\r\n"
    )
    assert structure.section((), "HEADER.FIELDS.NOT", ("Received", "Subject")) == b"From: a@b.c\r\nTo: d@e.f\r\n\r\n"
    assert structure.section((), "HEADER.FIELDS", ("X-Absent",)) == b"\r\n"


def test_header_only_message_has_no_blank_line_anywhere():
    raw = b"From: a@b.c\r\nSubject: no body\r\n"
    structure = MessageStructure.parse(raw)
    assert structure.header_bytes() == raw
    assert structure.text_bytes() == b""
    assert structure.section((), "HEADER.FIELDS", ("subject",)) == b"Subject: no body\r\n"
    assert structure.envelope()[1] == "no body"
    assert encode(structure.bodystructure(False)) == b'("TEXT" "PLAIN" ("CHARSET" "US-ASCII") NIL NIL "7BIT" 0 0)'


def test_message_starting_with_the_blank_line():
    structure = MessageStructure.parse(b"\r\nbody only\r\n")
    assert structure.header_bytes() == b"\r\n"
    assert structure.section((), "HEADER.FIELDS", ("from",)) == b"\r\n"
    assert structure.section((1,), None) == b"body only\r\n"


# --- imaptest's FETCH scripts (fetch-body-mime, fetch-body-message-rfc822*) ----------------------------

IMAPTEST_MIME = crlf('''
    From: user@domain.org
    Date: Sat, 24 Mar 2007 23:00:00 +0200
    Mime-Version: 1.0
    Content-Type: multipart/mixed; boundary="foo
     bar"

    Root MIME prologue

    --foo bar
    Content-Type: text/x-myown; charset=us-ascii

    hello

    --foo bar
    Content-Type: message/rfc822

    From: sub@domain.org
    Date: Sun, 12 Aug 2012 12:34:56 +0300
    Subject: submsg
    Content-Type: multipart/alternative; boundary="sub1"

    Sub MIME prologue
    --sub1
    Content-Type: text/html

    <p>Hello world</p>

    --sub1
    Content-Type: text/plain

    Hello another world

    --sub1--
    Sub MIME epilogue

    --foo bar--
    Root MIME epilogue

    ''')


@pytest.mark.parametrize(("parts", "text", "fields", "expected"), [
    ((1,), None, (), "hello\n"),
    ((1,), "MIME", (), "Content-Type: text/x-myown; charset=us-ascii\n\n"),
    ((2,), "MIME", (), "Content-Type: message/rfc822\n\n"),
    ((2,), "HEADER", (), "From: sub@domain.org\nDate: Sun, 12 Aug 2012 12:34:56 +0300\nSubject: submsg\n"
                         'Content-Type: multipart/alternative; boundary="sub1"\n\n'),
    ((2,), "HEADER.FIELDS", ("from", "subject", "X-foo"), "From: sub@domain.org\nSubject: submsg\n\n"),
    ((2,), "HEADER.FIELDS.NOT", ("from", "subject", "X-foo"),
     'Date: Sun, 12 Aug 2012 12:34:56 +0300\nContent-Type: multipart/alternative; boundary="sub1"\n\n'),
    ((2,), "TEXT", (), "Sub MIME prologue\n--sub1\nContent-Type: text/html\n\n<p>Hello world</p>\n\n--sub1\n"
                       "Content-Type: text/plain\n\nHello another world\n\n--sub1--\nSub MIME epilogue\n"),
    ((2, 1), "MIME", (), "Content-Type: text/html\n\n"),
    ((2, 1), None, (), "<p>Hello world</p>\n"),
    ((2, 2), "MIME", (), "Content-Type: text/plain\n\n"),
    ((2, 2), None, (), "Hello another world\n"),
])
def test_imaptest_fetch_body_mime(parts, text, fields, expected):
    structure = MessageStructure.parse(IMAPTEST_MIME)
    assert structure.section(parts, text, fields) == expected.replace("\n", "\r\n").encode()


def test_imaptest_fetch_body_mime_part_2_is_the_whole_encapsulated_message():
    structure = MessageStructure.parse(IMAPTEST_MIME)
    inner = structure.section((2,), None)
    assert inner.startswith(b"From: sub@domain.org\r\n") and inner.endswith(b"Sub MIME epilogue\r\n")


def test_imaptest_message_rfc822_at_top_level():
    raw = crlf("""
        From: user@domain.org
        Date: Sat, 24 Mar 2007 23:00:00 +0200
        Mime-Version: 1.0
        Content-Type: message/rfc822

        From: sub@domain.org
        Date: Sun, 12 Aug 2012 12:34:56 +0300
        Subject: submsg

        Hello world
        """)
    structure = MessageStructure.parse(raw)
    inner = b"From: sub@domain.org\r\nDate: Sun, 12 Aug 2012 12:34:56 +0300\r\nSubject: submsg\r\n\r\nHello world\r\n"
    assert structure.section((), "TEXT") == inner
    assert structure.section((1,), None) == inner
    assert structure.section((1,), "HEADER") == inner[:-13]
    assert structure.section((1,), "HEADER.FIELDS", ("from", "subject", "X-foo")) == (
        b"From: sub@domain.org\r\nSubject: submsg\r\n\r\n"
    )
    assert structure.section((1,), "HEADER.FIELDS.NOT", ("from", "subject", "X-foo")) == (
        b"Date: Sun, 12 Aug 2012 12:34:56 +0300\r\n\r\n"
    )
    assert structure.section((1,), "TEXT") == b"Hello world\r\n"
    assert structure.section((1, 1), None) == b"Hello world\r\n"


def test_imaptest_message_rfc822_twice():
    raw = crlf("""
        From: user@domain.org
        Content-Type: message/rfc822

        From: user2@domain.org
        Mime-Version: 1.0
        Content-Type: message/rfc822

        From: sub@domain.org
        Subject: submsg

        Hello world
        """)
    structure = MessageStructure.parse(raw)
    sub = b"From: sub@domain.org\r\nSubject: submsg\r\n\r\nHello world\r\n"
    assert structure.section((1,), "HEADER").startswith(b"From: user2@domain.org\r\n")
    assert structure.section((1,), "TEXT") == sub
    assert structure.section((1, 1), None) == sub
    assert structure.section((1, 1, 1), None) == b"Hello world\r\n"
    assert structure.section((1, 1), "HEADER") == b"From: sub@domain.org\r\nSubject: submsg\r\n\r\n"
    assert structure.section((1, 1), "TEXT") == b"Hello world\r\n"
    assert structure.section((1, 1, 1, 1), None) == b""


def test_imaptest_digest_with_trailing_space_after_boundaries():
    raw = crlf("""
        From: user@domain.org
        Content-Type: message/rfc822

        From: sub@domain.org
        Subject: submsg
        Content-Type: multipart/digest; boundary="foo"

        prologue

        --foo\x20

        From: m1@example.com
        Subject: m1

        m1 body

        --foo\x20
        X-Mime: m2 header

        From: m2@example.com
        Subject: m2

        m2 body

        --foo--

        epilogue
        """)
    structure = MessageStructure.parse(raw)
    assert structure.section((1, 1), None) == b"From: m1@example.com\r\nSubject: m1\r\n\r\nm1 body\r\n"
    assert structure.section((1, 1), "MIME") == b"\r\n"
    assert structure.section((1, 1), "HEADER") == b"From: m1@example.com\r\nSubject: m1\r\n\r\n"
    assert structure.section((1, 1), "TEXT") == b"m1 body\r\n"
    assert structure.section((1, 2), "MIME") == b"X-Mime: m2 header\r\n\r\n"
    assert structure.section((1, 2), "TEXT") == b"m2 body\r\n"
    # Digest parts without a Content-Type are message/rfc822 (RFC 2046 5.1.5).
    assert b'("MESSAGE" "RFC822" NIL NIL NIL "7BIT" 46 (NIL "m1" ((NIL NIL "m1" "example.com"))' in encode(
        structure.bodystructure()
    )


# --- malformed input -----------------------------------------------------------------------------------------


def test_missing_close_delimiter_ends_the_last_part_at_the_end():
    raw = b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\none\r\n--b\r\n\r\ntwo\r\n"
    structure = MessageStructure.parse(raw)
    assert structure.section((1,), None) == b"one"
    assert structure.section((2,), None) == b"two\r\n"
    assert encode(structure.bodystructure(False)) == (
        b'(("TEXT" "PLAIN" ("CHARSET" "US-ASCII") NIL NIL "7BIT" 3 0)("TEXT" "PLAIN" ("CHARSET" "US-ASCII") NIL NIL '
        b'"7BIT" 5 1) "MIXED")'
    )


EMPTY_MIXED = b'(("TEXT" "PLAIN" ("CHARSET" "US-ASCII") NIL NIL "7BIT" 0 0) "MIXED")'


def test_boundary_that_never_appears():
    raw = b"Content-Type: multipart/mixed; boundary=nowhere\r\n\r\njust text\r\n"
    structure = MessageStructure.parse(raw)
    assert encode(structure.bodystructure(False)) == EMPTY_MIXED
    assert encode(structure.bodystructure()) == (
        b'(("TEXT" "PLAIN" ("CHARSET" "US-ASCII") NIL NIL "7BIT" 0 0 NIL NIL NIL NIL) "MIXED" '
        b'("BOUNDARY" "nowhere") NIL NIL NIL)'
    )
    assert structure.section((1,), None) == b""
    assert structure.section((), "TEXT") == b"just text\r\n"


def test_multipart_without_boundary_parameter():
    raw = b"Content-Type: multipart/mixed\r\n\r\n--x\r\n\r\ntext\r\n--x--\r\n"
    structure = MessageStructure.parse(raw)
    assert encode(structure.bodystructure(False)) == EMPTY_MIXED


def test_boundary_line_inside_a_part_header_ends_the_part():
    raw = b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n--b\r\n\r\ntwo\r\n--b--"
    structure = MessageStructure.parse(raw)
    assert structure.section((1,), "MIME") == b"Content-Type: text/plain"
    assert structure.section((1,), None) == b""
    assert structure.section((2,), None) == b"two"


def test_outer_boundary_ends_an_unterminated_inner_multipart():
    raw = crlf("""
        Content-Type: multipart/mixed; boundary=outer

        --outer
        Content-Type: multipart/alternative; boundary=inner

        --inner

        never closed
        --outer

        second
        --outer--
        """)
    structure = MessageStructure.parse(raw)
    assert structure.section((1, 1), None) == b"never closed"
    assert structure.section((2,), None) == b"second"


def test_longest_boundary_wins_when_one_is_a_prefix_of_another():
    raw = crlf("""
        Content-Type: multipart/mixed; boundary=abc

        --abc
        Content-Type: multipart/mixed; boundary=abcdef

        --abcdef

        inner
        --abcdef--
        --abc--
        """)
    structure = MessageStructure.parse(raw)
    assert structure.section((1, 1), None) == b"inner"
    assert structure.section((2,), None) == b""


def test_bare_lf_message():
    raw = LAB.replace(b"\r\n", b"\n")
    structure = MessageStructure.parse(raw)
    assert structure.section((1,), None) == LAB_TEXT.replace(b"\r\n", b"\n")
    assert structure.section((2,), None) == PDF_B64[:-2].replace(b"\r\n", b"\n")
    assert structure.section((), "HEADER.FIELDS", ("subject",)) == b"Subject: =?UTF-8?Q?R=C3=A9sultats_d'analyses?=\n\n"
    assert encode(structure.envelope()) == envelope(LAB)
    assert b'"BASE64" 713 NIL' in encode(structure.bodystructure())


def test_mixed_line_ends():
    raw = b"Subject: x\nFrom: a@b.c\r\n\nbody\r\n"
    structure = MessageStructure.parse(raw)
    assert structure.header_bytes() == b"Subject: x\nFrom: a@b.c\r\n\n"
    assert structure.envelope()[1] == "x"


def test_eight_bit_junk_everywhere():
    raw = (
        b"\xff\xfe: junk\r\nFrom: \xe9\xe8 <a@b.c>\r\nContent-Type: text/plain; charset=\xe9\r\n"
        b"Content-Disposition: attachment; filename=\xe9t\xe9.txt\r\n\r\n\xe9t\xe9\r\n"
    )
    structure = MessageStructure.parse(raw)
    assert encode(structure.envelope()).startswith(b"(NIL NIL (({2}\r\n\xe9\xe8 NIL")
    assert b'("CHARSET" {1}\r\n\xe9)' in encode(structure.bodystructure())
    assert b'("FILENAME" {7}\r\n\xe9t\xe9.txt)' in encode(structure.bodystructure())
    assert structure.body_text() == "été\r\n"  # a charset that does not exist: UTF-8, else CP1252
    assert structure.section((), "HEADER.FIELDS.NOT", ("from", "content-type", "content-disposition")) == (
        b"\xff\xfe: junk\r\n\r\n"
    )


def test_lines_without_colon_in_the_header():
    raw = b"From a@b.c Mon Jan 1 00:00:00 2024\r\nSubject: mbox line\r\n\r\nx"
    structure = MessageStructure.parse(raw)
    assert structure.envelope()[1] == "mbox line"
    assert structure.section((), "HEADER.FIELDS.NOT", ("subject",)) == b"From a@b.c Mon Jan 1 00:00:00 2024\r\n\r\n"


def test_a_huge_number_of_parts_is_capped():
    body = b"".join(b"--b\r\nContent-Type: text/plain\r\n\r\nx\r\n" for _ in range(8000)) + b"--b--\r\n"
    structure = MessageStructure.parse(b"Content-Type: multipart/mixed; boundary=b\r\n\r\n" + body)
    structure_bytes = encode(structure.bodystructure())
    assert structure_bytes.count(b'("TEXT" "PLAIN"') == message_module.MAX_PARTS - 1
    assert structure.section((message_module.MAX_PARTS - 1,), None) == b"x"
    assert structure.section((message_module.MAX_PARTS,), None) == b""


def test_deep_multipart_nesting_is_capped():
    depth = 300
    raw = b"".join(b"Content-Type: multipart/mixed; boundary==b%d=\r\n\r\n--=b%d=\r\n" % (i, i) for i in range(depth))
    raw += b"Content-Type: text/plain\r\n\r\nbottom\r\n"
    raw += b"".join(b"--=b%d=--\r\n" % i for i in reversed(range(depth)))
    structure = MessageStructure.parse(raw)
    text = encode(structure.bodystructure())
    assert text.count(b'"MIXED"') == message_module.MAX_DEPTH
    assert b'("APPLICATION" "OCTET-STREAM" ("BOUNDARY" "=b50=")' in text
    assert structure.section((1,) * 50, None).startswith(b"--=b50=\r\n")
    assert structure.section((1,) * 51, None) == b""


def test_deep_message_rfc822_nesting_is_capped():
    raw = b"Content-Type: message/rfc822\r\n\r\n" * 1000 + b"Subject: bottom\r\n\r\nhi\r\n"
    structure = MessageStructure.parse(raw)
    text = encode(structure.bodystructure())
    assert text.count(b'"MESSAGE" "RFC822"') == message_module.MAX_DEPTH
    assert b'"APPLICATION" "OCTET-STREAM"' in text
    assert structure.body_text() == ""
    assert structure.section((1,) * 50, None).startswith(b"Content-Type: message/rfc822\r\n")


def test_empty_and_tiny_inputs():
    tiny = (b"", b"\r\n", b"\n", b"\r", b"x", b":", b"--", b"\r\n\r\n", b"Content-Type: multipart/mixed; boundary=a")
    for raw in tiny:
        structure = MessageStructure.parse(raw)
        encode(structure.envelope())
        encode(structure.bodystructure())
        assert structure.section((), None) == raw
        assert structure.section((), "HEADER") + structure.section((), "TEXT") == raw


def _check_invariants(structure: MessageStructure, raw: bytes) -> None:
    encode(structure.envelope())
    encode(structure.bodystructure())
    encode(structure.bodystructure(False))
    structure.body_text()
    structure.header_values("subject")
    assert structure.header_bytes() + structure.text_bytes() == raw
    for parts in [(), (1,), (2,), (1, 1), (1, 2), (2, 1), (2, 2), (1, 1, 1), (3, 1)]:
        for text in (None, "HEADER", "TEXT", "MIME", "HEADER.FIELDS", "HEADER.FIELDS.NOT"):
            section = structure.section(parts, text, ("from", "subject"))
            assert isinstance(section, bytes)
            if text in (None, "HEADER", "TEXT", "MIME") and section:
                assert section in raw


@pytest.mark.parametrize("seed", range(60))
def test_random_mutations_never_raise(seed):
    rng = random.Random(seed)
    samples = [LAB, ALTERNATIVE, FORWARD, IMAPTEST_MIME, RFC3501]
    raw = bytearray(rng.choice(samples))
    for _ in range(rng.randint(1, 30)):
        operation = rng.randrange(4)
        position = rng.randrange(len(raw) + 1)
        if operation == 0 and raw:
            del raw[position : position + rng.randint(1, 40)]
        elif operation == 1:
            raw[position:position] = rng.choice([b"\r\n", b"\n", b"--", b"--=_MSS_b1", b"--outer--", b'"', b"(",
                                                 b";", b":", b"<", b"\r\n\r\n", b"\xff", b"=?", b"\x00", b"\\"])
        elif operation == 2 and raw:
            raw[min(position, len(raw) - 1)] = rng.randrange(256)
        else:
            start = rng.randrange(len(raw) + 1)
            raw[position:position] = raw[start : start + rng.randint(1, 200)]
    raw = bytes(raw)
    _check_invariants(MessageStructure.parse(raw), raw)


@pytest.mark.parametrize("seed", range(20))
def test_random_bytes_never_raise(seed):
    rng = random.Random(1000 + seed)
    alphabet = b"\r\n-:;\"()<>@,=? abcBDT/\t\x00\xff"
    raw = bytes(rng.choice(alphabet) for _ in range(rng.randint(0, 3000)))
    raw = b"Content-Type: multipart/mixed; boundary=b\r\n\r\n" + raw if seed % 2 else raw
    _check_invariants(MessageStructure.parse(raw), raw)


def test_an_internal_error_degrades_instead_of_raising(monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("bug")

    monkeypatch.setattr(message_module._Parser, "parse", broken)
    structure = MessageStructure.parse(b"Subject: x\r\n\r\nbody")
    assert structure.text_bytes() == b"body"
    assert encode(structure.bodystructure(False)) == b'("TEXT" "PLAIN" ("CHARSET" "US-ASCII") NIL NIL "7BIT" 4 0)'
    monkeypatch.setattr(message_module, "parse_addresses", broken)
    structure = MessageStructure.parse(b"From: a@b.c\r\n\r\nbody")
    assert structure.envelope() == [None] * 10


# --- SEARCH helpers ---------------------------------------------------------------------------------------------


def test_header_values_are_decoded():
    structure = MessageStructure.parse(LAB)
    assert structure.header_values("Subject") == ["Résultats d'analyses"]
    assert structure.header_values("from") == ['"Laboratoire Biolab, site de Lyon" <resultats@biolab.mssante.fr>']
    assert structure.header_values("x-absent") == []


def test_header_values_returns_every_occurrence_unfolded():
    raw = b"Received: from a\r\n by b\r\nReceived: from c\r\nSubject: caf\xc3\xa9\r\nX-Latin: caf\xe9\r\n\r\n"
    structure = MessageStructure.parse(raw)
    assert structure.header_values("received") == ["from a by b", "from c"]
    assert structure.header_values("subject") == ["café"]
    assert structure.header_values("x-latin") == ["café"]


@pytest.mark.parametrize(("text", "expected"), [
    ("=?iso-8859-1?q?Compte_rendu_op=E9ratoire?= =?iso-8859-1?q?_de_M=2E_Dupont?=",
     "Compte rendu opératoire de M. Dupont"),
    ("=?UTF-8?B?UsOp?= =?UTF-8?B?c3VsdGF0cw==?=", "Résultats"),
    ("=?utf-8?B?w6k=?=", "é"),
    ("=?UTF-8?B?UsM=?= =?UTF-8?B?qXN1bHRhdHM=?=", "Résultats"),  # "é" split across two encoded-words
    ("Re: =?utf-8?q?caf=C3=A9?= ok", "Re: café ok"),
    ("=?utf-8*fr?q?caf=C3=A9?=", "café"),  # RFC 2231 language suffix
    ("=?x-unknown?q?caf=C3=A9?=", "café"),
    ("=?utf-8?q?a?= =?iso-8859-1?q?=E9?=", "aé"),
    ("=?utf-8?b?!!!?=", ""),
    ("no encoded words", "no encoded words"),
    ("=?broken", "=?broken"),
])
def test_decode_words(text, expected):
    assert decode_words(text) == expected


def test_body_text_decodes_transfer_encodings_and_charsets():
    assert MessageStructure.parse(LAB).body_text() == (
        "Bonjour Docteur,\r\nVeuillez trouver ci-joint le compte rendu de résultats."
    )
    assert MessageStructure.parse(ALTERNATIVE).body_text() == (
        "Patient sorti le 15/05, traitement inchangé.\n<p>Patient sorti, traitement inchangé.</p>\n"
        "date;ta;fc\r\n15/05;12/8;72\r\n"
    )


def test_body_text_includes_encapsulated_messages():
    assert MessageStructure.parse(FORWARD).body_text() == "Voir ci-dessous.\nAvis favorable."


def test_body_text_of_a_simple_message_and_of_bad_base64():
    assert MessageStructure.parse(b"Subject: x\r\n\r\nhello").body_text() == "hello"
    raw = b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\nw6k*!\r\n="
    assert MessageStructure.parse(raw).body_text() == "é"


def test_addresses_for_search_drop_comments_and_groups_and_decode_names():
    raw = (b"From: <user-from (comment)@ (comment) domain.org>\r\n"
           b"To: =?utf-8?q?Dupont=2C_J=C3=A9r=C3=B4me?= <jd@labo.fr>, Equipe: a@b.fr, c@d.fr;\r\n\r\nbody\r\n")
    structure = MessageStructure.parse(raw)
    assert structure.addresses("from") == ["<user-from@domain.org>"]
    assert structure.addresses("To") == ["Dupont, Jérôme <jd@labo.fr>", "<a@b.fr>", "<c@d.fr>"]
    assert structure.addresses("cc") == []
