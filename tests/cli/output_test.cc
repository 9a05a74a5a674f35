#include "cli/output.h"

#include <gtest/gtest.h>

namespace imgtool::cli {
namespace {

TEST(OutputTest, HumanSizeLikeDocker) {
  EXPECT_EQ(HumanSize(0), "0B");
  EXPECT_EQ(HumanSize(999), "999B");
  EXPECT_EQ(HumanSize(1000), "1kB");
  EXPECT_EQ(HumanSize(1240), "1.24kB");
  EXPECT_EQ(HumanSize(4260000), "4.26MB");
  EXPECT_EQ(HumanSize(77800000), "77.8MB");
  EXPECT_EQ(HumanSize(1500000000), "1.5GB");
}

TEST(OutputTest, Rfc3339) {
  EXPECT_EQ(ParseRfc3339("1970-01-01T00:00:00Z"), 0);
  EXPECT_EQ(ParseRfc3339("2023-11-14T22:13:20Z"), 1700000000);
  EXPECT_EQ(ParseRfc3339("2023-11-14T22:13:20.123456789Z"), 1700000000);
  EXPECT_EQ(ParseRfc3339("2023-11-15T00:13:20+02:00"), 1700000000);
  EXPECT_EQ(ParseRfc3339("2023-11-14T21:13:20-01:00"), 1700000000);
  EXPECT_EQ(ParseRfc3339(""), std::nullopt);
  EXPECT_EQ(ParseRfc3339("2023-11-14"), std::nullopt);
  EXPECT_EQ(ParseRfc3339("2023-11-14T22:13:20"), std::nullopt);
  EXPECT_EQ(ParseRfc3339("2023-11-14T22:13:20Zjunk"), std::nullopt);
  EXPECT_EQ(FormatRfc3339(1700000000), "2023-11-14T22:13:20Z");
  EXPECT_EQ(FormatRfc3339(0), "1970-01-01T00:00:00Z");
}

TEST(OutputTest, TimeAgo) {
  const int64_t t = 1700000000;
  EXPECT_EQ(TimeAgo("2023-11-14T22:13:20Z", t), "Less than a second ago");
  EXPECT_EQ(TimeAgo("2023-11-14T22:13:20Z", t + 1), "1 second ago");
  EXPECT_EQ(TimeAgo("2023-11-14T22:13:20Z", t + 45), "45 seconds ago");
  EXPECT_EQ(TimeAgo("2023-11-14T22:13:20Z", t + 90), "About a minute ago");
  EXPECT_EQ(TimeAgo("2023-11-14T22:13:20Z", t + 600), "10 minutes ago");
  EXPECT_EQ(TimeAgo("2023-11-14T22:13:20Z", t + 4000), "About an hour ago");
  EXPECT_EQ(TimeAgo("2023-11-14T22:13:20Z", t + 5 * 3600), "5 hours ago");
  EXPECT_EQ(TimeAgo("2023-11-14T22:13:20Z", t + 3 * 86400), "3 days ago");
  EXPECT_EQ(TimeAgo("2023-11-14T22:13:20Z", t + 21 * 86400), "3 weeks ago");
  EXPECT_EQ(TimeAgo("2023-11-14T22:13:20Z", t + 200 * 86400), "6 months ago");
  EXPECT_EQ(TimeAgo("1970-01-01T00:00:00Z", t), "53 years ago");
  EXPECT_EQ(TimeAgo("", t), "N/A");
  EXPECT_EQ(TimeAgo("yesterday", t), "N/A");
  // A clock behind the image's date is not "-5 seconds ago".
  EXPECT_EQ(TimeAgo("2023-11-14T22:13:20Z", t - 5), "Less than a second ago");
}

TEST(OutputTest, TablePadsColumns) {
  Table table({"A", "LONG HEADER", "C"});
  table.AddRow({"wide value", "x", "last"});
  table.AddRow({"b", "", ""});
  EXPECT_EQ(table.Render(),
            "A            LONG HEADER   C\n"
            "wide value   x             last\n"
            "b\n");
}

TEST(OutputTest, Truncate) {
  EXPECT_EQ(Truncate("short", 10), "short");
  EXPECT_EQ(Truncate("exactly10!", 10), "exactly10!");
  EXPECT_EQ(Truncate("this is too long", 8), "this is…");
  // A multi-byte character is dropped whole, never cut in half.
  EXPECT_EQ(Truncate("aaaaaa\xc3\xa9zzz", 8), "aaaaaa…");
}

}  // namespace
}  // namespace imgtool::cli
