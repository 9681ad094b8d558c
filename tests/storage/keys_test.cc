// Tests of the binary key encoding: byte order must equal the logical
// order, prefixes must be exact, and every decoder must refuse what its
// encoder could not have produced.
#include "storage/keys.h"

#include <cstdint>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "gtest/gtest.h"

namespace authtrail::storage {
namespace {

using google::protobuf::Timestamp;

// RocksDB's default comparator: unsigned bytewise.
bool BytewiseLess(std::string_view a, std::string_view b) {
  return a.compare(b) < 0;
}

bool StartsWith(std::string_view key, std::string_view prefix) {
  return key.substr(0, prefix.size()) == prefix;
}

Timestamp MakeTime(int64_t seconds, int32_t nanos) {
  Timestamp ts;
  ts.set_seconds(seconds);
  ts.set_nanos(nanos);
  return ts;
}

std::string EncodedTime(const Timestamp& ts) {
  std::string out;
  AppendTime(&out, ts);
  return out;
}

constexpr IndexTag kIdTags[] = {
    IndexTag::kPatient,        IndexTag::kConnection,
    IndexTag::kSession,        IndexTag::kRequest,
    IndexTag::kErrorCode,      IndexTag::kSource,
    IndexTag::kPatientFailure, IndexTag::kConnectionFailure,
    IndexTag::kSourceFailure,
};

TEST(PositionEncodingTest, IsEightBigEndianBytes) {
  EXPECT_EQ(LogKey(0), std::string(8, '\0'));
  EXPECT_EQ(LogKey(1), std::string("\0\0\0\0\0\0\0\1", 8));
  EXPECT_EQ(LogKey(0x0102030405060708), std::string("\1\2\3\4\5\6\7\x8", 8));
  EXPECT_EQ(LogKey(UINT64_MAX), std::string(8, '\xff'));
}

TEST(PositionEncodingTest, SpecialValuesSortNumerically) {
  const std::vector<uint64_t> values = {
      0,
      1,
      255,
      256,
      257,
      65535,
      65536,
      uint64_t{1} << 31,
      (uint64_t{1} << 32) - 1,
      uint64_t{1} << 32,
      (uint64_t{1} << 32) + 1,
      (uint64_t{1} << 63) - 1,
      uint64_t{1} << 63,
      (uint64_t{1} << 63) + 1,
      UINT64_MAX - 1,
      UINT64_MAX,
  };
  for (uint64_t a : values) {
    for (uint64_t b : values) {
      EXPECT_EQ(a < b, BytewiseLess(LogKey(a), LogKey(b))) << a << " vs " << b;
    }
  }
}

TEST(PositionEncodingTest, RandomPairsSortNumerically) {
  std::mt19937_64 rng(20240601);
  std::uniform_int_distribution<int> bits(0, 64);
  auto draw = [&]() -> uint64_t {
    int width = bits(rng);
    uint64_t value = rng();
    return width == 64 ? value : value & ((uint64_t{1} << width) - 1);
  };
  for (int i = 0; i < 20000; ++i) {
    uint64_t a = draw();
    uint64_t b = draw();
    ASSERT_EQ(a < b, BytewiseLess(LogKey(a), LogKey(b))) << a << " vs " << b;
  }
}

TEST(PositionEncodingTest, RoundTripsThroughDecodeLogKey) {
  for (uint64_t value : {uint64_t{0}, uint64_t{255}, uint64_t{256},
                         uint64_t{1} << 32, uint64_t{1} << 63, UINT64_MAX}) {
    EXPECT_EQ(DecodeLogKey(LogKey(value)), value);
  }
}

TEST(PositionEncodingTest, DecodeLogKeyRejectsWrongSizes) {
  std::string key = LogKey(42);
  EXPECT_FALSE(DecodeLogKey("").has_value());
  EXPECT_FALSE(DecodeLogKey(key.substr(0, 7)).has_value());
  EXPECT_FALSE(DecodeLogKey(key + '\0').has_value());
  EXPECT_FALSE(DecodeLogKey(std::string(16, '\0')).has_value());
  EXPECT_EQ(DecodeLogKey(key), 42u);
}

TEST(PositionEncodingTest, Fixed64RoundTripsAndRejectsWrongSizes) {
  std::string out;
  PutFixed64(&out, 0xdeadbeefcafef00d);
  ASSERT_EQ(out.size(), 8u);
  EXPECT_EQ(GetFixed64(out), 0xdeadbeefcafef00d);
  EXPECT_FALSE(GetFixed64(out.substr(1)).has_value());
  EXPECT_FALSE(GetFixed64(out + "x").has_value());
}

TEST(TimeEncodingTest, IsTwelveBytes) {
  EXPECT_EQ(EncodedTime(MakeTime(0, 0)).size(), 12u);
  EXPECT_EQ(EncodedTime(MakeTime(-1, 999999999)).size(), 12u);
}

TEST(TimeEncodingTest, NegativeSortsBeforeZeroBeforePositive) {
  std::string negative = EncodedTime(MakeTime(-1, 0));
  std::string far_negative = EncodedTime(MakeTime(INT64_MIN, 0));
  std::string zero = EncodedTime(MakeTime(0, 0));
  std::string positive = EncodedTime(MakeTime(1, 0));
  std::string far_positive = EncodedTime(MakeTime(INT64_MAX, 0));
  EXPECT_TRUE(BytewiseLess(far_negative, negative));
  EXPECT_TRUE(BytewiseLess(negative, zero));
  EXPECT_TRUE(BytewiseLess(zero, positive));
  EXPECT_TRUE(BytewiseLess(positive, far_positive));
}

TEST(TimeEncodingTest, SameSecondSortsByNanos) {
  for (int64_t seconds : {int64_t{-5}, int64_t{0}, int64_t{1700000000}}) {
    std::string a = EncodedTime(MakeTime(seconds, 0));
    std::string b = EncodedTime(MakeTime(seconds, 1));
    std::string c = EncodedTime(MakeTime(seconds, 256));
    std::string d = EncodedTime(MakeTime(seconds, 999999999));
    EXPECT_TRUE(BytewiseLess(a, b)) << seconds;
    EXPECT_TRUE(BytewiseLess(b, c)) << seconds;
    EXPECT_TRUE(BytewiseLess(c, d)) << seconds;
    // The last nanosecond of a second sorts before the next second.
    EXPECT_TRUE(BytewiseLess(d, EncodedTime(MakeTime(seconds + 1, 0))));
  }
}

TEST(TimeEncodingTest, RandomPairsSortInTimeOrder) {
  std::mt19937_64 rng(7);
  std::uniform_int_distribution<int64_t> seconds(-4'000'000'000, 4'000'000'000);
  std::uniform_int_distribution<int32_t> nanos(0, 999'999'999);
  std::uniform_int_distribution<int> small(-2, 2);
  for (int i = 0; i < 20000; ++i) {
    // Half the pairs share their second, to exercise the nanos.
    int64_t s1 = seconds(rng);
    int64_t s2 = i % 2 == 0 ? s1 + small(rng) : seconds(rng);
    int32_t n1 = nanos(rng);
    int32_t n2 = nanos(rng);
    bool less = s1 != s2 ? s1 < s2 : n1 < n2;
    ASSERT_EQ(less, BytewiseLess(EncodedTime(MakeTime(s1, n1)),
                                 EncodedTime(MakeTime(s2, n2))))
        << s1 << "." << n1 << " vs " << s2 << "." << n2;
  }
}

TEST(SignedEncodingTest, SortsNegativeBeforePositive) {
  const std::vector<int64_t> values = {INT64_MIN, -65536, -256, -1,       0,
                                       1,         255,    256,  INT64_MAX};
  for (int64_t a : values) {
    for (int64_t b : values) {
      std::string ea;
      std::string eb;
      AppendSignedBigEndian(&ea, a);
      AppendSignedBigEndian(&eb, b);
      EXPECT_EQ(a < b, BytewiseLess(ea, eb)) << a << " vs " << b;
    }
  }
}

TEST(IndexKeyTest, PrefixOfShortIdIsNotPrefixOfLongerId) {
  Timestamp time = MakeTime(1700000000, 5);
  for (IndexTag tag : kIdTags) {
    SCOPED_TRACE(static_cast<char>(tag));
    std::string short_prefix = IndexPrefix(tag, "p-1");
    std::string long_prefix = IndexPrefix(tag, "p-10");
    for (uint64_t position : {uint64_t{0}, uint64_t{1}, UINT64_MAX}) {
      std::string short_key = IndexKey(tag, "p-1", time, position);
      std::string long_key = IndexKey(tag, "p-10", time, position);
      EXPECT_TRUE(StartsWith(short_key, short_prefix));
      EXPECT_TRUE(StartsWith(long_key, long_prefix));
      EXPECT_FALSE(StartsWith(long_key, short_prefix));
      EXPECT_FALSE(StartsWith(short_key, long_prefix));
    }
    // Nor does the scan range of `p-1` contain any key of `p-10`.
    std::string end = PrefixSuccessor(short_prefix);
    std::string long_key = IndexKey(tag, "p-10", time, 7);
    EXPECT_FALSE(!BytewiseLess(long_key, short_prefix) &&
                 BytewiseLess(long_key, end));
  }
}

TEST(IndexKeyTest, PrefixIsTagThenLengthPrefixedId) {
  EXPECT_EQ(IndexPrefix(IndexTag::kPatient, "p-1"), std::string("P\0\3p-1", 6));
  EXPECT_EQ(IndexPrefix(IndexTag::kSession, ""), std::string("S\0\0", 3));
}

TEST(IndexKeyTest, AllIndexHasNoId) {
  Timestamp time = MakeTime(1, 2);
  EXPECT_EQ(IndexPrefix(IndexTag::kAll, "ignored"), "A");
  EXPECT_EQ(IndexKey(IndexTag::kAll, "x", time, 3),
            IndexKey(IndexTag::kAll, "", time, 3));
  EXPECT_EQ(IndexKey(IndexTag::kAll, "", time, 3).size(), 1u + 12 + 8);
}

TEST(IndexKeyTest, EntriesOfOneIdSortByTimeThenPosition) {
  std::string early =
      IndexKey(IndexTag::kConnection, "c", MakeTime(-1, 5), UINT64_MAX);
  std::string mid_low =
      IndexKey(IndexTag::kConnection, "c", MakeTime(100, 0), 2);
  std::string mid_high =
      IndexKey(IndexTag::kConnection, "c", MakeTime(100, 0), 256);
  std::string late = IndexKey(IndexTag::kConnection, "c", MakeTime(100, 1), 0);
  EXPECT_TRUE(BytewiseLess(early, mid_low));
  EXPECT_TRUE(BytewiseLess(mid_low, mid_high));
  EXPECT_TRUE(BytewiseLess(mid_high, late));
}

TEST(IndexKeyTest, DecodeIndexSuffixRoundTrips) {
  const Timestamp times[] = {MakeTime(0, 0), MakeTime(-62135596800, 0),
                             MakeTime(1700000000, 999999999),
                             MakeTime(253402300799, 1)};
  for (IndexTag tag :
       {IndexTag::kAll, IndexTag::kPatient, IndexTag::kSourceFailure}) {
    for (const Timestamp& time : times) {
      for (uint64_t position : {uint64_t{0}, uint64_t{256}, UINT64_MAX}) {
        std::string prefix = IndexPrefix(tag, "conn-\xc3\xa9");
        std::string key = IndexKey(tag, "conn-\xc3\xa9", time, position);
        std::optional<IndexEntry> entry = DecodeIndexSuffix(prefix, key);
        ASSERT_TRUE(entry.has_value());
        EXPECT_EQ(entry->time.seconds(), time.seconds());
        EXPECT_EQ(entry->time.nanos(), time.nanos());
        EXPECT_EQ(entry->position, position);
        EXPECT_EQ(IndexKeyPosition(key), position);
      }
    }
  }
}

TEST(IndexKeyTest, DecodeIndexSuffixRejectsForeignOrMisSizedKeys) {
  std::string prefix = IndexPrefix(IndexTag::kPatient, "p-1");
  std::string key = IndexKey(IndexTag::kPatient, "p-1", MakeTime(10, 20), 30);
  ASSERT_TRUE(DecodeIndexSuffix(prefix, key).has_value());
  EXPECT_FALSE(DecodeIndexSuffix(prefix, key + "x").has_value());
  EXPECT_FALSE(
      DecodeIndexSuffix(prefix, key.substr(0, key.size() - 1)).has_value());
  EXPECT_FALSE(DecodeIndexSuffix(IndexPrefix(IndexTag::kPatient, "p-2"), key)
                   .has_value());
  EXPECT_FALSE(DecodeIndexSuffix(IndexPrefix(IndexTag::kConnection, "p-1"), key)
                   .has_value());
  EXPECT_FALSE(DecodeIndexSuffix(prefix, prefix).has_value());
}

TEST(IndexKeyTest, IndexKeyPositionRejectsShortKeys) {
  EXPECT_FALSE(IndexKeyPosition("").has_value());
  EXPECT_FALSE(IndexKeyPosition("1234567").has_value());
  EXPECT_EQ(IndexKeyPosition(LogKey(99)), 99u);
}

TEST(TimelineKeyTest, RoundTrips) {
  for (int64_t minute :
       {int64_t{-1}, int64_t{0}, int64_t{28333333}, INT64_MIN, INT64_MAX}) {
    for (std::string_view code : {"", "invalid_grant", "a"}) {
      std::string prefix = TimelinePrefix(TimelineTag::kSource, "src-1");
      std::string key =
          TimelineKey(TimelineTag::kSource, "src-1", minute, code);
      std::optional<TimelineEntry> entry = DecodeTimelineSuffix(prefix, key);
      ASSERT_TRUE(entry.has_value()) << minute << " " << code;
      EXPECT_EQ(entry->minute, minute);
      EXPECT_EQ(entry->error_code, code);
    }
  }
}

TEST(TimelineKeyTest, RejectsTrailingGarbage) {
  std::string prefix = TimelinePrefix(TimelineTag::kPatient, "p-1");
  std::string key =
      TimelineKey(TimelineTag::kPatient, "p-1", 1000, "server_error");
  ASSERT_TRUE(DecodeTimelineSuffix(prefix, key).has_value());
  EXPECT_FALSE(DecodeTimelineSuffix(prefix, key + "x").has_value());
  EXPECT_FALSE(
      DecodeTimelineSuffix(prefix, key + std::string(1, '\0')).has_value());
}

TEST(TimelineKeyTest, RejectsTruncatedOrForeignKeys) {
  std::string prefix = TimelinePrefix(TimelineTag::kPatient, "p-1");
  std::string key =
      TimelineKey(TimelineTag::kPatient, "p-1", 1000, "server_error");
  for (size_t cut = 1; cut <= key.size() - prefix.size(); ++cut) {
    EXPECT_FALSE(DecodeTimelineSuffix(prefix, key.substr(0, key.size() - cut))
                     .has_value())
        << cut;
  }
  EXPECT_FALSE(
      DecodeTimelineSuffix(TimelinePrefix(TimelineTag::kConnection, "p-1"), key)
          .has_value());
}

TEST(TimelineKeyTest, MinutesSortInOrderAndIdsAreExact) {
  std::string before = TimelineKey(TimelineTag::kSource, "s", -1, "zzz");
  std::string after = TimelineKey(TimelineTag::kSource, "s", 0, "aaa");
  EXPECT_TRUE(BytewiseLess(before, after));
  std::string short_prefix = TimelinePrefix(TimelineTag::kSource, "s-1");
  EXPECT_FALSE(StartsWith(TimelineKey(TimelineTag::kSource, "s-10", 0, "x"),
                          short_prefix));
}

TEST(ConnectionKeyTest, PatientListAndConnectionKeysNeverCollide) {
  std::string patient_key = PatientConnectionKey("p-1", "c-1");
  EXPECT_TRUE(StartsWith(patient_key, PatientConnectionsPrefix("p-1")));
  EXPECT_FALSE(StartsWith(PatientConnectionKey("p-10", "c-1"),
                          PatientConnectionsPrefix("p-1")));
  std::string connection_key = ConnectionKey("c-1");
  EXPECT_NE(connection_key.front(), patient_key.front());
  EXPECT_FALSE(StartsWith(connection_key, PatientConnectionsPrefix("")));
}

TEST(PrefixSuccessorTest, IncrementsTheLastByte) {
  EXPECT_EQ(PrefixSuccessor("abc"), "abd");
  EXPECT_EQ(PrefixSuccessor(std::string("a\0", 2)), std::string("a\1", 2));
  EXPECT_EQ(PrefixSuccessor("a\x7f"), "a\x80");
}

TEST(PrefixSuccessorTest, DropsTrailingFfBytes) {
  EXPECT_EQ(PrefixSuccessor("ab\xff"), "ac");
  EXPECT_EQ(PrefixSuccessor("a\xff\xff"), "b");
  EXPECT_EQ(PrefixSuccessor("\x01\xff"), "\x02");
}

TEST(PrefixSuccessorTest, AllFfOrEmptyHasNoSuccessor) {
  EXPECT_EQ(PrefixSuccessor("\xff"), "");
  EXPECT_EQ(PrefixSuccessor("\xff\xff\xff"), "");
  EXPECT_EQ(PrefixSuccessor(""), "");
}

TEST(PrefixSuccessorTest, IsAboveEveryKeyWithThePrefix) {
  std::mt19937_64 rng(99);
  std::uniform_int_distribution<int> byte(0, 255);
  for (int i = 0; i < 2000; ++i) {
    std::string prefix;
    for (int n = i % 4; n >= 0; --n) {
      prefix.push_back(static_cast<char>(i % 3 == 0 ? 0xff : byte(rng)));
    }
    prefix.insert(0, 1, 'P');
    std::string key = prefix;
    for (int n = i % 5; n > 0; --n) {
      key.push_back(static_cast<char>(byte(rng)));
    }
    key.append(i % 7, '\xff');
    std::string end = PrefixSuccessor(prefix);
    ASSERT_FALSE(end.empty());
    EXPECT_TRUE(BytewiseLess(key, end));
    EXPECT_FALSE(StartsWith(end, prefix));
  }
}

}  // namespace
}  // namespace authtrail::storage
