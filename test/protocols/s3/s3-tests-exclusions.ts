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
    reason:
      "public ACLs and anonymous access: every bucket and object is private to its owner (Get*Acl answer the owner's " +
      "FULL_CONTROL, Put*Acl takes only that), every request is signed by a user's key and sees only that user's " +
      "tree (permissions are atrest's per-path permissions)",
    tests: [
      "test_expected_bucket_owner",
      "test_access_bucket_private_object_private",
      "test_access_bucket_private_objectv2_private",
      "test_object_raw_get",
      "test_object_raw_get_bucket_gone",
      "test_object_raw_get_object_gone",
      "test_object_delete_key_bucket_gone",
      "test_object_raw_get_x_amz_expires_not_expired",
      "test_object_raw_get_x_amz_expires_out_range_zero",
      "test_object_raw_get_x_amz_expires_out_max_range",
      "test_object_raw_get_x_amz_expires_out_positive_range",
      "test_100_continue",
      "test_list_multipart_upload_owner",
      "test_object_copy_not_owned_object_bucket",
      "test_access_bucket_private_objectv2_publicread",
      "test_access_bucket_private_objectv2_publicreadwrite",
      "test_bucket_listv2_objects_anonymous",
      // POST Object without a signature (to a public-read-write bucket), and a redirect to an anonymous listing
      "test_post_object_anonymous_request",
      "test_post_object_set_success_code",
      "test_post_object_set_invalid_success_code",
      "test_post_object_success_redirect_action",
      "test_post_object_tags_anonymous_request",
    ],
  },
  {
    kind: "lacks",
    reason: "bucket policies: access is atrest's per-user, per-path permissions",
    tests: [
      "test_encryption_sse_c_enforced_with_bucket_policy",
      "test_encryption_sse_c_deny_algo_with_bucket_policy",
      "test_bucket_policy_multipart",
      "test_bucketv2_policy",
      "test_bucketv2_policy_acl",
      "test_bucketv2_policy_another_bucket",
      "test_multipart_upload_on_a_bucket_with_policy",
    ],
  },
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
    reason:
      "lifecycle rules and object lock are not served (501)",
    tests: [
      "test_lifecycle_set_multipart",
      "test_object_lock_delete_multipart_object_with_retention",
      "test_object_lock_delete_multipart_object_with_legal_hold_on",
    ],
  },
  {
    kind: "lacks",
    reason:
      "bucket names are per user, not global: a bucket is a folder of its user's home, so another user may create " +
      "the same name (no BucketAlreadyExists) and sees no bucket of another user (404, not 403)",
    tests: ["test_bucket_create_exists_nonowner", "test_object_copy_not_owned_bucket"],
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
      "asserts on a negative presign lifetime before any request",
    tests: ["test_list_buckets_paginated", "test_object_raw_put_authenticated_expired"],
  },
];

/** The exclusion that covers a pytest test id, if any. */
export function exclusionOf(id: string): Exclusion | undefined {
  return EXCLUSIONS.find((e) => e.tests.some((t) => (t.endsWith("*") ? id.startsWith(t.slice(0, -1)) : id === t)));
}
