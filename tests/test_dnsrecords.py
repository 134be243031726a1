"""The records a mail domain publishes, and what the test DNS server holds for them."""

from __future__ import annotations

import pytest

from tempalias.config import Listen, SigningSettings
from tempalias.dkimkeys import load_or_create_keys
from tempalias.dnsrecords import (
    DIFFERENT, MISSING, PRESENT, UNKNOWN, check, expected, zone_text)
from tempalias.resolver import make_resolver

DOMAIN = "records.example"
MX_HOST = "mx.tempalias.example"


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    settings = SigningSettings(dkim_key=None, dkim_selector="ta", dkim_ed25519=True, arc=True)
    return load_or_create_keys(settings, str(tmp_path_factory.mktemp("data")))


@pytest.fixture
def resolver(dns_zone):
    return make_resolver((Listen("127.0.0.1", dns_zone.port),), 2.0)


def states(results):
    return [(record.name, record.type, status.state) for record, status in results]


def test_the_records_a_domain_publishes(keys):
    records = expected(DOMAIN.upper() + ".", keys, MX_HOST, "_spf.smarthost.example")
    assert [(record.name, record.type) for record in records] == [
        (DOMAIN, "MX"), (DOMAIN, "TXT"), ("ta._domainkey." + DOMAIN, "TXT"),
        ("ta-ed._domainkey." + DOMAIN, "TXT"), ("_dmarc." + DOMAIN, "TXT")]
    mx, spf, dkim_rsa, dkim_ed, dmarc = records
    assert mx.value == f"10 {MX_HOST}"
    assert spf.value == "v=spf1 mx include:_spf.smarthost.example ~all"
    assert dkim_rsa.value == keys.rsa_public_txt()
    assert dkim_ed.value == keys.ed25519_public_txt()
    assert dmarc.value == "v=DMARC1; p=quarantine; adkim=r; aspf=r"
    assert all(record.why for record in records)
    assert expected(DOMAIN, keys, MX_HOST)[1].value == "v=spf1 mx ~all"


def test_zone_text_splits_long_txt_into_strings_dns_can_hold(keys):
    dkim_rsa = expected(DOMAIN, keys, MX_HOST)[2]
    line = zone_text(dkim_rsa)
    assert line.startswith(f"ta._domainkey.{DOMAIN}. IN TXT \"v=DKIM1; k=rsa; p=")
    strings = line.split(" IN TXT ")[1].split('" "')
    assert len(strings) == 2 and all(len(text.strip('"')) <= 255 for text in strings)
    assert "".join(text.strip('"') for text in strings) == dkim_rsa.value
    assert zone_text(expected(DOMAIN, keys, MX_HOST)[0]) == \
        f"{DOMAIN}. IN MX 10 {MX_HOST}."


def test_every_record_present_as_printed(keys, dns_zone, resolver):
    records = expected(DOMAIN, keys, MX_HOST)
    for record in records:
        dns_zone.publish(zone_text(record))
    assert {status.state for _, status in check(records, resolver)} == {PRESENT}


def test_nothing_published_is_all_missing(keys, dns_zone, resolver):
    results = check(expected(DOMAIN, keys, MX_HOST), resolver)
    assert {status.state for _, status in results} == {MISSING}
    assert all(status.found == () for _, status in results)


def test_other_values_are_different_and_shown(keys, dns_zone, resolver):
    records = expected(DOMAIN, keys, MX_HOST)
    dns_zone.set_records(DOMAIN, "MX", ["10 mail.elsewhere.example"])
    # other TXT at the domain (a site verification) is not SPF: only the SPF one is shown
    dns_zone.set_records(DOMAIN, "TXT", ["site-verification=abc", "v=spf1 -all"])
    other_key = records[3].value.replace("k=ed25519", "k=rsa")
    dns_zone.set_records(f"ta._domainkey.{DOMAIN}", "TXT", [other_key])
    dns_zone.set_records(f"_dmarc.{DOMAIN}", "TXT", ["v=DMARC1; p=none"])
    results = check(records, resolver)
    assert [status.state for _, status in results] == [DIFFERENT, DIFFERENT, DIFFERENT,
                                                       MISSING, DIFFERENT]
    found = [status.found for _, status in results]
    assert found[0] == ("10 mail.elsewhere.example",)
    assert found[1] == ("v=spf1 -all",)
    assert found[4] == ("v=DMARC1; p=none",)


def test_spacing_case_preference_and_extra_tags_do_not_matter(keys, dns_zone, resolver):
    records = expected(DOMAIN, keys, MX_HOST)
    dns_zone.set_records(DOMAIN, "MX", ["5 backup.example", f"20 {MX_HOST.upper()}"])
    dns_zone.set_records(DOMAIN, "TXT", ["V=SPF1  MX   ~ALL"])
    rsa_p = records[2].value.split("p=")[1]
    spaced = "v=DKIM1;k=rsa;  t=s; p=" + " ".join(rsa_p[i:i + 64] for i in range(0, len(rsa_p), 64))
    dns_zone.set_records(f"ta._domainkey.{DOMAIN}", "TXT", [[spaced[:200], spaced[200:]]])
    dns_zone.set_records(f"ta-ed._domainkey.{DOMAIN}", "TXT", [records[3].value.replace("; ", ";")])
    dns_zone.set_records(f"_dmarc.{DOMAIN}", "TXT",
                         ["v=DMARC1;p=QUARANTINE;adkim=r;aspf=r;rua=mailto:d@records.example"])
    assert {status.state for _, status in check(records, resolver)} == {PRESENT}

    # an RSA key record without k= is rsa (RFC 6376 3.6.1)
    dns_zone.set_records(f"ta._domainkey.{DOMAIN}", "TXT",
                         [["v=DKIM1; p=" + rsa_p[:200], rsa_p[200:]]])
    assert check(records[2:3], resolver)[0][1].state == PRESENT


def test_dns_not_answering_is_unknown(keys, dns_zone, resolver):
    records = expected(DOMAIN, keys, MX_HOST)
    dns_zone.fail(f"_dmarc.{DOMAIN}", "servfail")
    assert [status.state for _, status in check(records, resolver)] == [
        MISSING, MISSING, MISSING, MISSING, UNKNOWN]
    dns_zone.fail(DOMAIN, "timeout")  # a silent server: the look-ups share one budget
    results = check(records, make_resolver((Listen("127.0.0.1", dns_zone.port),), 1.0))
    assert {status.state for _, status in results} == {UNKNOWN}
