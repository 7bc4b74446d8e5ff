// Virtual-hosted-style addressing (issue 13 item 1): which Host names a bucket for the configured base domains.
import assert from "node:assert/strict";
import { test } from "node:test";
import { virtualBucket } from "../../../src/protocols/s3/server.ts";

test("a Host bucket.<domain>[:port] names the bucket; the domain itself, IPs and other names are path-style", () => {
  const d = ["s3.localhost", "localhost", "s3.example.com"];
  assert.equal(virtualBucket("photos.s3.localhost:9000", d), "photos");
  assert.equal(virtualBucket("Photos.S3.Example.COM", d), "photos");
  assert.equal(virtualBucket("my.dotted.bucket.s3.example.com.", d), "my.dotted.bucket");
  assert.equal(virtualBucket("photos.localhost:9000", d), "photos");
  // s3.localhost is a domain itself, not bucket "s3" under localhost
  assert.equal(virtualBucket("s3.localhost:9000", d), undefined);
  assert.equal(virtualBucket("localhost:9000", d), undefined);
  assert.equal(virtualBucket("127.0.0.1:9000", d), undefined);
  assert.equal(virtualBucket("[::1]:9000", d), undefined);
  assert.equal(virtualBucket("files.example.org", d), undefined);
  assert.equal(virtualBucket(undefined, d), undefined);
  assert.equal(virtualBucket("photos.s3.localhost", []), undefined);
});
