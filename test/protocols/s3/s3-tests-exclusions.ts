// The ceph/s3-tests cases of `core+sse-c`, `multipart`, `list-v2` and `presigned` that atrest does not pass, each with its reason (docs/s3.md "Conformance").
// Every other test of the subsets must pass (test/protocols/s3/s3-tests.test.ts, s3-tests-subsets.test.ts). An entry names a pytest test id
// (test_x or test_x[params]) or, ending in `*`, every test id starting with what comes before it.
// Keep this list short and honest: a bug the suite finds is fixed, not listed here.

export interface Exclusion {
  tests: string[];
  reason: string;
  /** "lacks": a feature atrest deliberately does not have; "pending": not served yet (another slice of issue 13);
   * "client": the suite's own code does not run with Debian 12's botocore 1.29 (not a server answer). */
  kind: "lacks" | "pending" | "client";
}

export const EXCLUSIONS: Exclusion[] = [
  {
    kind: "lacks",
    reason: "AWS Signature Version 2: only SigV4 is served (the CORS preflight itself passes in the SigV4 cases)",
    tests: [
      "test_cors_presigned_get_object_v2",
      "test_cors_presigned_get_object_tenant_v2",
      "test_cors_presigned_put_object_v2",
      "test_cors_presigned_put_object_tenant_v2",
    ],
  },
  {
    kind: "lacks",
    reason: "lifecycle rules and object lock are not served (501)",
    tests: [
      "test_lifecycle_set_multipart",
      "test_object_lock_delete_multipart_object_with_retention",
      "test_object_lock_delete_multipart_object_with_legal_hold_on",
    ],
  },
  {
    kind: "lacks",
    reason:
      "keys are paths of a file tree: a key cannot be both an object and the prefix of others (foo/bar and " +
      "foo/bar/baz), and a key ending in / is a folder that holds no data",
    tests: [
      "test_bucket_list_delimiter_basic",
      "test_bucket_listv2_delimiter_basic",
      "test_bucket_list_delimiter_prefix_ends_with_delimiter",
      "test_bucket_listv2_delimiter_prefix_ends_with_delimiter",
      "test_bucket_list_delimiter_not_skip_special",
    ],
  },
  {
    kind: "client",
    reason:
      "Debian 12's botocore 1.29 has no ChecksumType parameter and no CRC64NVME (ParamValidationError before any " +
      "request)",
    tests: ["test_multipart_use_cksum_helper_*"],
  },
  {
    kind: "client",
    reason:
      "a non-ASCII header value set through botocore's hook is signed as text but sent as latin-1 " +
      "(marked fails_on_rgw: Ceph RGW fails it too)",
    tests: ["test_object_set_get_unicode_metadata"],
  },
  {
    kind: "client",
    reason:
      "the test itself fails inside Debian 12's botocore 1.29 (TypeError, an unknown IfNoneMatch parameter) or its " +
      "header hook runs before signing, so the header it sets or removes never reaches the server",
    tests: [
      "test_object_create_bad_expect_mismatch",
      "test_bucket_create_bad_expect_mismatch",
      "test_object_create_bad_contentlength_negative",
      "test_object_create_bad_contentlength_none",
      "test_object_create_bad_authorization_empty",
      "test_object_create_bad_authorization_none",
      "test_bucket_create_bad_authorization_empty",
      "test_bucket_create_bad_authorization_none",
      "test_put_object_if_match",
      "test_multipart_put_object_if_match",
      // the same, in a versioned bucket
      "test_put_current_object_if_none_match",
      "test_multipart_put_current_object_if_none_match",
      "test_put_current_object_if_match",
      "test_multipart_put_current_object_if_match",
      "test_put_object_current_if_match",
    ],
  },
  {
    kind: "client",
    reason:
      "botocore 1.29 has no ListBuckets parameters (MaxBuckets is dropped, not sent) and its awscrt signer " +
      "asserts on a presign lifetime of 0 or less before any request",
    tests: [
      "test_list_buckets_paginated",
      "test_object_raw_put_authenticated_expired",
      "test_object_raw_get_x_amz_expires_out_range_zero",
      "test_object_raw_get_x_amz_expires_out_positive_range",
    ],
  },
];

/** The exclusion that covers a pytest test id, if any. */
export function exclusionOf(id: string): Exclusion | undefined {
  return EXCLUSIONS.find((e) => e.tests.some((t) => (t.endsWith("*") ? id.startsWith(t.slice(0, -1)) : id === t)));
}
