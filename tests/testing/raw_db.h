// Direct access to a stopped store's RocksDB folder, for tests that tamper
// with what is on disk.
#ifndef AUTHTRAIL_TESTS_TESTING_RAW_DB_H_
#define AUTHTRAIL_TESTS_TESTING_RAW_DB_H_

#include <memory>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "rocksdb/db.h"

namespace authtrail::testing {

// Opens the raw database with all its families, for tampering with it
// while no store has it open.
class RawDb {
 public:
  explicit RawDb(const std::string& dir) {
    std::vector<std::string> names;
    rocksdb::Options options;
    EXPECT_TRUE(rocksdb::DB::ListColumnFamilies(options, dir, &names).ok());
    std::vector<rocksdb::ColumnFamilyDescriptor> descriptors;
    for (const auto& name : names) descriptors.emplace_back(name, options);
    rocksdb::DB* raw = nullptr;
    rocksdb::Status s =
        rocksdb::DB::Open(options, dir, descriptors, &handles_, &raw);
    EXPECT_TRUE(s.ok()) << s.ToString();
    db_.reset(raw);
  }
  ~RawDb() {
    for (auto* h : handles_) db_->DestroyColumnFamilyHandle(h);
    rocksdb::Status s = db_->Close();
    EXPECT_TRUE(s.ok());
  }
  rocksdb::ColumnFamilyHandle* Family(const std::string& name) {
    for (auto* h : handles_) {
      if (h->GetName() == name) return h;
    }
    ADD_FAILURE() << "no family " << name;
    return nullptr;
  }
  std::string Get(const std::string& family, const std::string& key) {
    std::string value;
    EXPECT_TRUE(db_->Get({}, Family(family), key, &value).ok());
    return value;
  }
  void Put(const std::string& family, const std::string& key,
           const std::string& value) {
    ASSERT_TRUE(db_->Put({}, Family(family), key, value).ok());
  }
  void Delete(const std::string& family, const std::string& key) {
    ASSERT_TRUE(db_->Delete({}, Family(family), key).ok());
  }
  rocksdb::DB* db() { return db_.get(); }

 private:
  std::vector<rocksdb::ColumnFamilyHandle*> handles_;
  std::unique_ptr<rocksdb::DB> db_;
};

}  // namespace authtrail::testing

#endif  // AUTHTRAIL_TESTS_TESTING_RAW_DB_H_
