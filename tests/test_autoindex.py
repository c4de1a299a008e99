"""Directory listings of web servers read as entries (dd.transfer.autoindex): nginx's, and
Apache's in its layouts; links that leave the directory are never entries."""
import calendar
import time

from dd.transfer import Entry
from dd.transfer.autoindex import parse

NGINX = (
    '<html>\n'
    '<head><title>Index of /data/</title></head>\n'
    '<body>\n'
    '<h1>Index of /data/</h1><hr><pre><a href="../">../</a>\n'
    '<a href="sub%20dir/">sub dir/</a>                                          10-Jan-2024 12:'
    '01                   -\n'
    '<a href="a%20very%20long%20name%20that%20nginx%20cuts%20short%20in%20the%20text.txt">a ver'
    'y long name that nginx cuts short in the t..&gt;</a> 10-Jan-2024 12:02               12345'
    '\n'
    '<a href="%23hash.bin">#hash.bin</a>                                          09-Feb-2023 0'
    '0:00                   0\n'
    '</pre><hr></body>\n'
    '</html>\n')

APACHE_TABLE = (
    '<!DOCTYPE HTML PUBLIC "-//W3C//DTD HTML 3.2 Final//EN">\n'
    '<html><head><title>Index of /data</title></head><body>\n'
    '<h1>Index of /data</h1>\n'
    '<table>\n'
    '<tr><th valign="top"><img src="/icons/blank.gif" alt="[ICO]"></th><th><a href="?C=N;O=D">N'
    'ame</a></th>\n'
    '<th><a href="?C=M;O=A">Last modified</a></th><th><a href="?C=S;O=A">Size</a></th></tr>\n'
    '<tr><th colspan="5"><hr></th></tr>\n'
    '<tr><td valign="top"><img src="/icons/back.gif" alt="[PARENTDIR]"></td><td><a href="/">Par'
    'ent Directory</a></td><td>&nbsp;</td><td align="right">  - </td></tr>\n'
    '<tr><td valign="top"><a href="big.grib"><img src="/icons/unknown.gif" alt="[   ]"></a></td'
    '><td><a href="big.grib">big.grib</a></td><td align="right">2024-01-10 12:03  </td><td alig'
    'n="right">1.2M</td></tr>\n'
    '<tr><td valign="top"><img src="/icons/text.gif" alt="[TXT]"></td><td><a href="small.txt">s'
    'mall.txt</a></td><td align="right">2024-01-10 12:04:05  </td><td align="right"> 12 </td></'
    'tr>\n'
    '<tr><td valign="top"><img src="/icons/folder.gif" alt="[DIR]"></td><td><a href="sub/">sub/'
    '</a></td><td align="right">2024-01-10 12:05  </td><td align="right">  - </td></tr>\n'
    '</table></body></html>\n')

APACHE_PRE = (
    '<html><body><h1>Index of /data</h1><pre><img src="/icons/blank.gif" alt="Icon "> <a href="'
    '?C=N;O=D">Name</a>\n'
    '<hr><img src="/icons/back.gif" alt="[PARENTDIR]"> <a href="/">Parent Directory</a>        '
    '                     -\n'
    '<img src="/icons/text.gif" alt="[TXT]"> <a href="small.txt">small.txt</a>               10'
    '-Jan-2024 12:04   12\n'
    '<img src="/icons/text.gif" alt="[TXT]"> <a href="other.txt">other.txt</a>               10'
    '-Jan-2024 12:04  3.4K\n'
    '<hr></pre></body></html>\n')


def at(text):
    return float(calendar.timegm(time.strptime(text, "%Y-%m-%d %H:%M:%S")))


def test_nginx_listing_gives_exact_sizes_and_times_to_the_minute():
    long_name = "a very long name that nginx cuts short in the text.txt"
    assert parse(NGINX, "/data/") == [
        Entry("#hash.bin", False, 0, at("2023-02-09 00:00:00")),
        Entry(long_name, False, 12345, at("2024-01-10 12:02:00")),
        Entry("sub dir", True, None, at("2024-01-10 12:01:00"))]


def test_apache_table_listing_leaves_rounded_sizes_to_be_asked_for():
    assert parse(APACHE_TABLE, "/data") == [
        Entry("big.grib", False, None, at("2024-01-10 12:03:00")),
        Entry("small.txt", False, 12, at("2024-01-10 12:04:05")),
        Entry("sub", True, None, at("2024-01-10 12:05:00"))]


def test_apache_pre_listing():
    assert parse(APACHE_PRE, "/data/") == [
        Entry("other.txt", False, None, at("2024-01-10 12:04:00")),
        Entry("small.txt", False, 12, at("2024-01-10 12:04:00"))]


def test_links_that_leave_the_directory_are_not_entries():
    page = "".join(f'<a href="{href}">x</a> 10-Jan-2024 12:00 1\n' for href in (
        "../", "/", "/other/file", "http://elsewhere/data/file", "//elsewhere/data/file", "sub/deeper.txt",
        "..%2Fescape", "%2E%2E/", "?C=M;O=A", "#top", "mailto:someone@example.com", "/data/ok.txt"))
    assert [entry.name for entry in parse(page, "/data/")] == ["ok.txt"]
