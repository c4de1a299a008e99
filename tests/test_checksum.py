import hashlib
import os

import pytest
import xxhash

from dd.core import checksum
from dd.core.errors import DDError

REFERENCES = {
    "sha512": lambda data: hashlib.sha512(data).hexdigest(),
    "sha256": lambda data: hashlib.sha256(data).hexdigest(),
    "sha384": lambda data: hashlib.sha384(data).hexdigest(),
    "sha3-256": lambda data: hashlib.sha3_256(data).hexdigest(),
    "sha3-384": lambda data: hashlib.sha3_384(data).hexdigest(),
    "sha3-512": lambda data: hashlib.sha3_512(data).hexdigest(),
    "md5": lambda data: hashlib.md5(data).hexdigest(),
    "xxh128": lambda data: xxhash.xxh3_128(data).hexdigest(),
    "none": lambda data: "",
}
# Crosses the 1 MiB read buffer boundary and is not a multiple of it.
DATA = os.urandom(checksum.BUFFER_SIZE * 2 + 12345)


def test_every_method_is_tested_and_sha512_is_the_default():
    assert set(checksum.METHODS) == set(REFERENCES) | {"name"}
    assert checksum.DEFAULT == "sha512"


@pytest.mark.parametrize("method", REFERENCES)
@pytest.mark.parametrize("data", [b"", b"a", DATA], ids=["empty", "one-byte", "2MiB"])
def test_incremental_value_matches_the_reference(method, data):
    hasher = checksum.new(method)
    for start in range(0, len(data), 100_000):
        hasher.update(memoryview(data)[start:start + 100_000])
    assert hasher.method == method
    assert hasher.hexdigest() == REFERENCES[method](data)
    assert hasher.hexdigest() == hasher.hexdigest().lower()


@pytest.mark.parametrize("method", REFERENCES)
@pytest.mark.parametrize("offset, length", [
    (0, None), (0, 0), (0, 1), (5, 100), (checksum.BUFFER_SIZE - 1, checksum.BUFFER_SIZE + 2),
    (len(DATA) - 1, 1), (777, None)])
def test_of_file_ranges(tmp_path, method, offset, length):
    path = tmp_path / "data.bin"
    path.write_bytes(DATA)
    end = None if length is None else offset + length
    assert checksum.of_file(path, method, offset, length) == REFERENCES[method](DATA[offset:end])


@pytest.mark.parametrize("size", [0, 1, 1024, checksum.SMALLEST_BUFFER, checksum.SMALLEST_BUFFER + 1])
def test_of_file_small_files_read_with_a_buffer_of_their_size(tmp_path, size):
    path = tmp_path / "small.bin"
    path.write_bytes(DATA[:size])
    assert checksum.of_file(path, "sha512") == REFERENCES["sha512"](DATA[:size])
    assert checksum.of_file(str(path), "md5", 1) == REFERENCES["md5"](DATA[1:size])


def test_of_file_range_past_the_end_is_an_error(tmp_path):
    path = tmp_path / "short.bin"
    path.write_bytes(bytes(10))
    with pytest.raises(DDError, match="short.bin.*ends before byte 12"):
        checksum.of_file(path, "sha256", 8, 4)


def test_of_file_missing_file_names_it(tmp_path):
    with pytest.raises(DDError, match="cannot checksum .*missing.bin: No such file"):
        checksum.of_file(tmp_path / "missing.bin", "sha512")


def test_name_sums_the_relative_path_not_the_data():
    rel = "obs/2024/ünïcode file#1.txt"
    assert checksum.of_name(rel) == hashlib.sha512(rel.encode("utf-8")).hexdigest()
    with pytest.raises(DDError, match="of_name"):
        checksum.new("name")


def test_verifiable():
    assert [m for m in checksum.METHODS if checksum.verifiable(m)] == [
        "sha512", "sha256", "sha384", "sha3-256", "sha3-384", "sha3-512", "md5", "xxh128"]


@pytest.mark.parametrize("call", [checksum.new, checksum.verifiable,
                                  lambda m: checksum.of_file("/dev/null", m)])
def test_unknown_method_names_it_and_the_valid_ones(call):
    with pytest.raises(DDError) as raised:
        call("crc32")
    assert str(raised.value) == ("unknown checksum method 'crc32' "
                                 "(use one of: sha512, sha256, sha384, sha3-256, sha3-384, sha3-512, "
                                 "md5, xxh128, name, none)")

