// One KMIP request message in, one response message out (KMIP 1.2, also 1.0/1.1; 1.3/1.4 headers are read, and a
// 1.4 request's separate Authenticated Encryption fields are honoured). Each batch item is decoded into a KmsService
// call (kmip-objects.ts: authorised by role + client policy, audited) and every refusal answered with a KMIP Result
// Reason; nothing a client sends can make this throw. Batch items run in order; a later item may name the object
// the previous one created or located by leaving out its Unique Identifier (KMIP's ID Placeholder).

import { AtrestError } from "../../errors.ts";
import type { KmsCaller } from "../api/caller.ts";
import type { CreateInput, GcmInput, KmipObject, KmipObjectType, KmipState, LocateInput } from "../kmip-objects.ts";
import { KmipObjectError } from "../kmip-objects.ts";
import type { KmsService } from "../service.ts";
import {
  BlockCipherMode,
  CryptographicAlgorithm,
  KeyFormatType,
  NameType,
  ObjectType,
  Operation,
  QueryFunction,
  ResultReason,
  ResultStatus,
  RevocationReasonCode,
  State,
  T,
} from "./tags.ts";
import {
  bytes,
  DEFAULT_LIMITS,
  datetime,
  decodeTtlv,
  encodeTtlv,
  enumv,
  FieldError,
  Fields,
  int,
  struct,
  type Ttlv,
  TtlvError,
  type TtlvLimits,
  text,
} from "./ttlv.ts";

/** Protocol versions answered by DiscoverVersions, most preferred first. */
export const SUPPORTED_VERSIONS: readonly [number, number][] = [
  [1, 2],
  [1, 1],
  [1, 0],
];
/** Request headers read (1.3 and 1.4 messages of the operations here are decoded the same way). */
const MAX_MINOR = 4;
export const MAX_BATCH_ITEMS = 64;
const VENDOR = "atrest";

export const SUPPORTED_OPERATIONS: readonly number[] = [
  Operation.Create,
  Operation.Register,
  Operation.Locate,
  Operation.Get,
  Operation.GetAttributes,
  Operation.Activate,
  Operation.Revoke,
  Operation.Destroy,
  Operation.Query,
  Operation.DiscoverVersions,
  Operation.Encrypt,
  Operation.Decrypt,
];

/** A refusal with its KMIP Result Reason. */
export class KmipFailure extends Error {
  readonly reason: number;
  constructor(reason: number, message: string) {
    super(message);
    this.name = "KmipFailure";
    this.reason = reason;
  }
}

/** A Destroy that became a dual-control request: answered as Operation Pending. */
class Pending {
  readonly correlation: string;
  readonly message: string;
  constructor(correlation: string, message: string) {
    this.correlation = correlation;
    this.message = message;
  }
}

export interface KmipRequestContext {
  caller: KmsCaller;
  /** The unsealed service; throws while sealed. */
  service: () => KmsService;
  /** An unexpected failure, for the server's log (the client sees General Failure, "internal error"). */
  onInternalError?: (err: unknown) => void;
}

export interface HandledMessage {
  response: Buffer;
  /** Operations of the batch items, for metrics. */
  operations: number[];
  failures: number;
}

/** Answers one request message (already framed: exactly the bytes of one TTLV structure). */
export function handleMessage(
  message: Buffer,
  ctx: KmipRequestContext,
  limits: TtlvLimits = DEFAULT_LIMITS,
): HandledMessage {
  let request: Ttlv;
  try {
    request = decodeTtlv(message, limits);
  } catch (e) {
    const msg = e instanceof TtlvError ? e.message : "malformed message";
    return failedMessage([1, 2], ResultReason.InvalidMessage, `invalid TTLV: ${msg}`);
  }
  let version: [number, number] = [1, 2];
  let items: Fields[];
  try {
    const msg = new Fields(request, T.RequestMessage);
    const header = msg.struct(T.RequestHeader);
    if (!header) throw new FieldError("Request Header is missing", true);
    const pv = header.struct(T.ProtocolVersion);
    if (!pv) throw new FieldError("Protocol Version is missing", true);
    const major = pv.one(T.ProtocolVersionMajor, "integer");
    const minor = pv.one(T.ProtocolVersionMinor, "integer");
    if (major !== 1 || minor < 0 || minor > MAX_MINOR) {
      return failedMessage([1, 2], ResultReason.InvalidMessage, `protocol version ${major}.${minor} is not supported`);
    }
    version = [major, minor];
    const count = header.one(T.BatchCount, "integer");
    items = msg.structs(T.BatchItem);
    if (count !== items.length) {
      throw new FieldError(`Batch Count is ${count} but the message has ${items.length} batch items`, false);
    }
    if (items.length === 0 || items.length > MAX_BATCH_ITEMS) {
      throw new FieldError(`a message carries 1 to ${MAX_BATCH_ITEMS} batch items`, false);
    }
  } catch (e) {
    const msg = e instanceof FieldError ? e.message : "malformed request message";
    return failedMessage(version, ResultReason.InvalidMessage, msg);
  }
  const out: Ttlv[] = [];
  const operations: number[] = [];
  let failures = 0;
  const batch: BatchState = { placeholder: undefined, version, scrub: [] };
  for (const item of items) {
    const r = handleItem(item, ctx, batch);
    operations.push(r.operation ?? 0);
    if (r.failed) failures++;
    out.push(r.item);
  }
  try {
    return { response: responseMessage(version, out), operations, failures };
  } finally {
    for (const b of batch.scrub) b.fill(0); // key material and plaintext copies made for the response tree
  }
}

interface BatchState {
  placeholder: string | undefined;
  version: [number, number];
  /** Secret buffers in the response tree, zeroed once it is encoded. */
  scrub: Buffer[];
}

function secretCopy(batch: BatchState, b: Buffer): Buffer {
  const copy = Buffer.from(b);
  batch.scrub.push(copy);
  return copy;
}

function handleItem(
  item: Fields,
  ctx: KmipRequestContext,
  batch: BatchState,
): { item: Ttlv; operation: number | undefined; failed: boolean } {
  let operation: number | undefined;
  let batchId: Buffer | undefined;
  try {
    operation = item.one(T.Operation, "enumeration");
    batchId = item.opt(T.UniqueBatchItemId, "bytes");
  } catch (e) {
    return {
      item: resultItem(operation, batchId, ResultStatus.OperationFailed, ResultReason.InvalidMessage, errText(e)),
      operation,
      failed: true,
    };
  }
  try {
    const payload = item.struct(T.RequestPayload) ?? new Fields(struct(T.RequestPayload));
    const response = dispatch(operation, payload, ctx, batch);
    if (response instanceof Pending) {
      return {
        item: struct(
          T.BatchItem,
          enumv(T.Operation, operation),
          batchId ? bytes(T.UniqueBatchItemId, batchId) : undefined,
          enumv(T.ResultStatus, ResultStatus.OperationPending),
          // Optional with Pending (KMIP 1.2 §6.10), but clients such as PyKMIP read a reason from every non-success:
          // Permission Denied says why it did not run now (this client alone may not destroy; custodians decide).
          enumv(T.ResultReason, ResultReason.PermissionDenied),
          text(T.ResultMessage, response.message),
          bytes(T.AsynchronousCorrelationValue, Buffer.from(response.correlation, "utf8")),
        ),
        operation,
        failed: false,
      };
    }
    return {
      item: struct(
        T.BatchItem,
        enumv(T.Operation, operation),
        batchId ? bytes(T.UniqueBatchItemId, batchId) : undefined,
        enumv(T.ResultStatus, ResultStatus.Success),
        struct(T.ResponsePayload, ...response),
      ),
      operation,
      failed: false,
    };
  } catch (e) {
    const [reason, message] = reasonOf(e, ctx);
    return {
      item: resultItem(operation, batchId, ResultStatus.OperationFailed, reason, message),
      operation,
      failed: true,
    };
  }
}

function dispatch(op: number, p: Fields, ctx: KmipRequestContext, batch: BatchState): Ttlv[] | Pending {
  const caller = ctx.caller;
  switch (op) {
    case Operation.DiscoverVersions: {
      const asked = p
        .structs(T.ProtocolVersion)
        .map((v) => [v.one(T.ProtocolVersionMajor, "integer"), v.one(T.ProtocolVersionMinor, "integer")] as const);
      const versions =
        asked.length === 0
          ? SUPPORTED_VERSIONS
          : asked.filter(([a, b]) => SUPPORTED_VERSIONS.some(([x, y]) => x === a && y === b));
      return versions.map(([a, b]) => protocolVersion(a, b));
    }
    case Operation.Query: {
      // Authorised and audited like a metadata read: any registered client may ask.
      ctx.service().kmip.locate(caller, { maxItems: 0 });
      const fns = p.all(T.QueryFunction, "enumeration");
      const out: Ttlv[] = [];
      if (fns.includes(QueryFunction.QueryOperations)) {
        for (const o of SUPPORTED_OPERATIONS) out.push(enumv(T.Operation, o));
      }
      if (fns.includes(QueryFunction.QueryObjects)) {
        out.push(enumv(T.ObjectType, ObjectType.SymmetricKey), enumv(T.ObjectType, ObjectType.SecretData));
      }
      if (fns.includes(QueryFunction.QueryServerInformation)) {
        out.push(text(T.VendorIdentification, VENDOR), struct(T.ServerInformation));
      }
      return out;
    }
    case Operation.Create: {
      const type = p.one(T.ObjectType, "enumeration");
      if (type !== ObjectType.SymmetricKey) {
        throw new KmipFailure(ResultReason.InvalidField, "Create makes symmetric keys only (Object Type 2)");
      }
      const attrs = readTemplate(p);
      if (attrs.algorithm !== undefined && attrs.algorithm !== CryptographicAlgorithm.Aes) {
        throw new KmipFailure(ResultReason.FeatureNotSupported, "only AES keys can be created");
      }
      if (attrs.length === undefined)
        throw new KmipFailure(ResultReason.MissingData, "Cryptographic Length is missing");
      const input: CreateInput = { length: attrs.length, usageMask: attrs.usageMask ?? 0, activate: attrs.activate };
      if (attrs.name !== undefined) input.name = attrs.name;
      const obj = ctx.service().kmip.create(caller, input);
      batch.placeholder = obj.uid;
      return [enumv(T.ObjectType, ObjectType.SymmetricKey), text(T.UniqueIdentifier, obj.uid)];
    }
    case Operation.Register: {
      const type = p.one(T.ObjectType, "enumeration");
      const attrs = readTemplate(p);
      let objectType: KmipObjectType;
      let block: Fields | undefined;
      let secretType: number | undefined;
      if (type === ObjectType.SymmetricKey) {
        objectType = "symmetric-key";
        block = p.struct(T.SymmetricKey)?.struct(T.KeyBlock);
      } else if (type === ObjectType.SecretData) {
        objectType = "secret-data";
        const sd = p.struct(T.SecretData);
        secretType = sd?.one(T.SecretDataType, "enumeration");
        block = sd?.struct(T.KeyBlock);
      } else {
        throw new KmipFailure(ResultReason.InvalidField, "Register takes symmetric keys and secret data only");
      }
      if (!block) throw new KmipFailure(ResultReason.MissingData, "the object's Key Block is missing");
      const format = block.one(T.KeyFormatType, "enumeration");
      if (format !== KeyFormatType.Raw && format !== KeyFormatType.Opaque) {
        throw new KmipFailure(ResultReason.KeyFormatTypeNotSupported, "key format Raw or Opaque only");
      }
      if (block.opt(T.KeyCompressionType, "enumeration") !== undefined) {
        throw new KmipFailure(ResultReason.KeyCompressionTypeNotSupported, "compressed keys are not supported");
      }
      if (block.struct(T.KeyWrappingData)) {
        throw new KmipFailure(ResultReason.FeatureNotSupported, "wrapped key blocks are not supported");
      }
      const alg = block.opt(T.CryptographicAlgorithm, "enumeration") ?? attrs.algorithm;
      if (objectType === "symmetric-key" && alg !== CryptographicAlgorithm.Aes) {
        throw new KmipFailure(ResultReason.FeatureNotSupported, "only AES keys can be registered");
      }
      const value = block.struct(T.KeyValue);
      const material = value?.opt(T.KeyMaterial, "bytes");
      if (!material) throw new KmipFailure(ResultReason.MissingData, "Key Material (a byte string) is missing");
      const declared = block.opt(T.CryptographicLength, "integer") ?? attrs.length;
      try {
        if (objectType === "symmetric-key" && declared !== undefined && declared !== material.length * 8) {
          throw new KmipFailure(ResultReason.InvalidField, "Cryptographic Length does not match the key material");
        }
        const input = {
          objectType,
          material,
          usageMask: attrs.usageMask ?? 0,
          activate: attrs.activate,
          ...(attrs.name !== undefined ? { name: attrs.name } : {}),
          ...(secretType !== undefined ? { secretType } : {}),
        };
        const obj = ctx.service().kmip.register(caller, input);
        batch.placeholder = obj.uid;
        return [text(T.UniqueIdentifier, obj.uid)];
      } finally {
        material.fill(0);
      }
    }
    case Operation.Get: {
      const uid = uidOf(p, batch);
      const format = p.opt(T.KeyFormatType, "enumeration");
      if (p.struct(T.KeyWrappingSpecification)) {
        throw new KmipFailure(ResultReason.FeatureNotSupported, "wrapped Get is not supported");
      }
      if (p.opt(T.KeyCompressionType, "enumeration") !== undefined) {
        throw new KmipFailure(ResultReason.KeyCompressionTypeNotSupported, "compressed keys are not supported");
      }
      const { object, material } = ctx.service().kmip.get(caller, uid);
      try {
        const isKey = object.objectType === "symmetric-key";
        const want = format ?? (isKey ? KeyFormatType.Raw : KeyFormatType.Opaque);
        if (want !== (isKey ? KeyFormatType.Raw : KeyFormatType.Opaque)) {
          throw new KmipFailure(
            ResultReason.KeyFormatTypeNotSupported,
            `${isKey ? "a symmetric key is served Raw" : "secret data is served Opaque"} only`,
          );
        }
        const keyBlock = struct(
          T.KeyBlock,
          enumv(T.KeyFormatType, want),
          struct(T.KeyValue, bytes(T.KeyMaterial, secretCopy(batch, material))),
          isKey ? enumv(T.CryptographicAlgorithm, CryptographicAlgorithm.Aes) : undefined,
          isKey ? int(T.CryptographicLength, object.length) : undefined,
        );
        return [
          enumv(T.ObjectType, isKey ? ObjectType.SymmetricKey : ObjectType.SecretData),
          text(T.UniqueIdentifier, object.uid),
          isKey
            ? struct(T.SymmetricKey, keyBlock)
            : struct(T.SecretData, enumv(T.SecretDataType, object.secretType ?? 1), keyBlock),
        ];
      } finally {
        material.fill(0);
      }
    }
    case Operation.GetAttributes: {
      const uid = uidOf(p, batch);
      const names = p.all(T.AttributeName, "text");
      const obj = ctx.service().kmip.attributes(caller, uid);
      return [text(T.UniqueIdentifier, obj.uid), ...attributesOf(obj, names)];
    }
    case Operation.Locate: {
      const input: LocateInput = {};
      const max = p.opt(T.MaximumItems, "integer");
      if (max !== undefined) {
        if (max < 0) throw new KmipFailure(ResultReason.InvalidField, "Maximum Items must not be negative");
        input.maxItems = max;
      }
      for (const a of p.structs(T.Attribute)) {
        const name = a.one(T.AttributeName, "text");
        const value = a.raw(T.AttributeValue)[0];
        if (!value) throw new KmipFailure(ResultReason.MissingData, `attribute ${name} has no value`);
        if (name === "Name") {
          input.name = new Fields(value).one(T.NameValue, "text");
        } else if (name === "State") {
          input.state = stateName(enumValue(value, name));
        } else if (name === "Object Type") {
          const t = enumValue(value, name);
          input.objectType = t === ObjectType.SymmetricKey ? "symmetric-key" : "secret-data";
          if (t !== ObjectType.SymmetricKey && t !== ObjectType.SecretData) return [];
        } else {
          throw new KmipFailure(ResultReason.FeatureNotSupported, `Locate by ${name} is not supported`);
        }
      }
      const uids = ctx.service().kmip.locate(caller, input);
      if (uids.length > 0) batch.placeholder = uids[0];
      return uids.map((u) => text(T.UniqueIdentifier, u));
    }
    case Operation.Activate: {
      const obj = ctx.service().kmip.activate(caller, uidOf(p, batch));
      return [text(T.UniqueIdentifier, obj.uid)];
    }
    case Operation.Revoke: {
      const uid = uidOf(p, batch);
      const reason = p.struct(T.RevocationReason);
      if (!reason) throw new KmipFailure(ResultReason.MissingData, "Revocation Reason is missing");
      const code = reason.one(T.RevocationReasonCode, "enumeration");
      if (code < RevocationReasonCode.Unspecified || code > RevocationReasonCode.PrivilegeWithdrawn) {
        throw new KmipFailure(ResultReason.InvalidField, `unknown Revocation Reason Code ${code}`);
      }
      const compromised = code === RevocationReasonCode.KeyCompromise || code === RevocationReasonCode.CaCompromise;
      const obj = ctx.service().kmip.revoke(caller, uid, code, compromised);
      return [text(T.UniqueIdentifier, obj.uid)];
    }
    case Operation.Destroy: {
      const uid = uidOf(p, batch);
      const r = ctx.service().kmip.destroy(caller, uid);
      if ("request" in r) {
        return new Pending(
          r.request.id,
          `destruction of ${uid} needs ${r.request.quorum} custodian approvals: request ${r.request.id}`,
        );
      }
      return [text(T.UniqueIdentifier, r.object.uid)];
    }
    case Operation.Encrypt: {
      const uid = uidOf(p, batch);
      const data = p.one(T.Data, "bytes");
      const gcm = gcmParams(p, batch);
      const r = ctx.service().kmip.encrypt(caller, uid, data, gcm);
      // KMIP 1.4 returns the tag in its own field; earlier versions have none, so the tag follows the ciphertext.
      const separate = batch.version[1] >= 4;
      return [
        text(T.UniqueIdentifier, uid),
        bytes(T.Data, separate ? r.data : Buffer.concat([r.data, r.tag])),
        bytes(T.IvCounterNonce, r.iv),
        separate ? bytes(T.AuthenticatedEncryptionTag, r.tag) : undefined,
      ].filter((x): x is Ttlv => x !== undefined);
    }
    case Operation.Decrypt: {
      const uid = uidOf(p, batch);
      const data = p.one(T.Data, "bytes");
      const gcm = gcmParams(p, batch);
      let tag = p.opt(T.AuthenticatedEncryptionTag, "bytes");
      let body = data;
      if (tag === undefined) {
        const n = gcm.tagLength ?? 16;
        if (data.length < n) throw new KmipFailure(ResultReason.InvalidField, "Data is shorter than the GCM tag");
        body = data.subarray(0, data.length - n);
        tag = data.subarray(data.length - n);
      }
      const plain = ctx.service().kmip.decrypt(caller, uid, body, tag, gcm);
      try {
        return [text(T.UniqueIdentifier, uid), bytes(T.Data, secretCopy(batch, plain))];
      } finally {
        plain.fill(0);
      }
    }
    default:
      throw new KmipFailure(ResultReason.OperationNotSupported, `operation ${op} is not supported`);
  }
}

function uidOf(p: Fields, batch: BatchState): string {
  const uid = p.opt(T.UniqueIdentifier, "text") ?? batch.placeholder;
  if (uid === undefined) throw new KmipFailure(ResultReason.MissingData, "Unique Identifier is missing");
  return uid;
}

function gcmParams(p: Fields, batch: BatchState): GcmInput {
  const out: GcmInput = {};
  const cp = p.struct(T.CryptographicParameters);
  if (cp) {
    const mode = cp.opt(T.BlockCipherMode, "enumeration");
    if (mode !== undefined && mode !== BlockCipherMode.Gcm) {
      throw new KmipFailure(ResultReason.FeatureNotSupported, "only AES-GCM (Block Cipher Mode 9) is supported");
    }
    const alg = cp.opt(T.CryptographicAlgorithm, "enumeration");
    if (alg !== undefined && alg !== CryptographicAlgorithm.Aes) {
      throw new KmipFailure(ResultReason.FeatureNotSupported, "only AES is supported");
    }
    const padding = cp.opt(T.PaddingMethod, "enumeration");
    if (padding !== undefined && padding !== 1) {
      throw new KmipFailure(ResultReason.FeatureNotSupported, "AES-GCM takes no padding (Padding Method None)");
    }
    const ivBits = cp.opt(T.IvLength, "integer");
    if (ivBits !== undefined && ivBits !== 96) {
      throw new KmipFailure(ResultReason.InvalidField, "an AES-GCM IV is 96 bits");
    }
    const tagLength = cp.opt(T.TagLength, "integer");
    if (tagLength !== undefined) out.tagLength = tagLength;
  }
  const iv = p.opt(T.IvCounterNonce, "bytes");
  if (iv !== undefined) out.iv = iv;
  if (batch.version[1] >= 4) {
    const aad = p.opt(T.AuthenticatedEncryptionAdditionalData, "bytes");
    if (aad !== undefined) out.aad = aad;
  }
  return out;
}

interface TemplateAttrs {
  name?: string;
  algorithm?: number;
  length?: number;
  usageMask?: number;
  activate?: boolean;
}

/** The Template-Attribute of Create / Register: the attributes stored, the ones ignored, the ones refused. */
function readTemplate(p: Fields): TemplateAttrs {
  const out: TemplateAttrs = {};
  const tpl = p.struct(T.TemplateAttribute);
  if (!tpl) return out;
  if (tpl.raw(T.Name).length > 0) {
    throw new KmipFailure(ResultReason.FeatureNotSupported, "named templates are not supported");
  }
  for (const a of tpl.structs(T.Attribute)) {
    const name = a.one(T.AttributeName, "text");
    const value = a.raw(T.AttributeValue)[0];
    if (!value) throw new KmipFailure(ResultReason.MissingData, `attribute ${name} has no value`);
    switch (name) {
      case "Name": {
        if (out.name !== undefined) throw new KmipFailure(ResultReason.InvalidField, "one Name per object");
        const n = new Fields(value);
        out.name = n.one(T.NameValue, "text");
        const type = n.opt(T.NameType, "enumeration");
        if (type !== undefined && type !== NameType.UninterpretedTextString && type !== NameType.Uri) {
          throw new KmipFailure(ResultReason.InvalidField, `unknown Name Type ${type}`);
        }
        break;
      }
      case "Cryptographic Algorithm":
        out.algorithm = enumValue(value, name);
        break;
      case "Cryptographic Length":
        out.length = intValue(value, name);
        break;
      case "Cryptographic Usage Mask":
        out.usageMask = intValue(value, name);
        break;
      case "Activation Date": {
        if (value.type !== "datetime") throw new KmipFailure(ResultReason.InvalidField, `${name} must be a date`);
        if (value.value * 1000n > BigInt(Date.now())) {
          throw new KmipFailure(ResultReason.FeatureNotSupported, "a future Activation Date is not supported");
        }
        out.activate = true;
        break;
      }
      case "Operation Policy Name":
      case "Object Group":
      case "Contact Information":
        break; // accepted and not kept: access is decided by the client policy
      default:
        if (name.startsWith("x-") || name.startsWith("y-")) break; // custom attributes: not kept
        throw new KmipFailure(ResultReason.FeatureNotSupported, `attribute ${name} is not supported`);
    }
  }
  return out;
}

function enumValue(v: Ttlv, name: string): number {
  if (v.type !== "enumeration") throw new KmipFailure(ResultReason.InvalidField, `${name} must be an enumeration`);
  return v.value;
}

function intValue(v: Ttlv, name: string): number {
  if (v.type !== "integer") throw new KmipFailure(ResultReason.InvalidField, `${name} must be an integer`);
  return v.value;
}

const STATE_CODES: Readonly<Record<KmipState, number>> = {
  "pre-active": State.PreActive,
  active: State.Active,
  deactivated: State.Deactivated,
  compromised: State.Compromised,
  destroyed: State.Destroyed,
  "destroyed-compromised": State.DestroyedCompromised,
};

function stateName(code: number): KmipState {
  const e = Object.entries(STATE_CODES).find(([, v]) => v === code);
  if (!e) throw new KmipFailure(ResultReason.InvalidField, `unknown State ${code}`);
  return e[0] as KmipState;
}

const attribute = (name: string, value: Ttlv): Ttlv =>
  struct(T.Attribute, text(T.AttributeName, name), { ...value, tag: T.AttributeValue } as Ttlv);

function attributesOf(o: KmipObject, names: string[]): Ttlv[] {
  const date = (iso: string | null): Ttlv | undefined => (iso ? datetime(T.AttributeValue, new Date(iso)) : undefined);
  const all: [string, Ttlv | undefined][] = [
    ["Unique Identifier", text(T.AttributeValue, o.uid)],
    [
      "Object Type",
      enumv(T.AttributeValue, o.objectType === "symmetric-key" ? ObjectType.SymmetricKey : ObjectType.SecretData),
    ],
    ["Name", o.name === null ? undefined : nameValue(o.name)],
    ["Cryptographic Algorithm", o.algorithm ? enumv(T.AttributeValue, CryptographicAlgorithm.Aes) : undefined],
    ["Cryptographic Length", o.algorithm ? int(T.AttributeValue, o.length) : undefined],
    ["Cryptographic Usage Mask", int(T.AttributeValue, o.usageMask)],
    ["State", enumv(T.AttributeValue, STATE_CODES[o.state])],
    ["Initial Date", date(o.createdAt)],
    ["Activation Date", date(o.activatedAt)],
    ["Deactivation Date", date(o.deactivatedAt)],
    ["Compromise Date", date(o.compromisedAt)],
    ["Destroy Date", date(o.destroyedAt)],
  ];
  return all
    .filter(([n, v]) => v !== undefined && (names.length === 0 || names.includes(n)))
    .map(([n, v]) => attribute(n, v as Ttlv));
}

function nameValue(name: string): Ttlv {
  return struct(T.AttributeValue, text(T.NameValue, name), enumv(T.NameType, NameType.UninterpretedTextString));
}

function protocolVersion(major: number, minor: number): Ttlv {
  return struct(T.ProtocolVersion, int(T.ProtocolVersionMajor, major), int(T.ProtocolVersionMinor, minor));
}

function resultItem(
  operation: number | undefined,
  batchId: Buffer | undefined,
  status: number,
  reason: number,
  message: string,
): Ttlv {
  return struct(
    T.BatchItem,
    operation !== undefined ? enumv(T.Operation, operation) : undefined,
    batchId ? bytes(T.UniqueBatchItemId, batchId) : undefined,
    enumv(T.ResultStatus, status),
    enumv(T.ResultReason, reason),
    text(T.ResultMessage, message.slice(0, 500)),
  );
}

function responseMessage(version: [number, number], items: Ttlv[]): Buffer {
  return encodeTtlv(
    struct(
      T.ResponseMessage,
      struct(
        T.ResponseHeader,
        protocolVersion(version[0], version[1]),
        datetime(T.TimeStamp, new Date()),
        int(T.BatchCount, items.length),
      ),
      ...items,
    ),
  );
}

function failedMessage(version: [number, number], reason: number, message: string): HandledMessage {
  return {
    response: responseMessage(version, [
      resultItem(undefined, undefined, ResultStatus.OperationFailed, reason, message),
    ]),
    operations: [],
    failures: 1,
  };
}

function errText(e: unknown): string {
  return e instanceof FieldError || e instanceof KmipFailure ? e.message : "malformed batch item";
}

/** The Result Reason and message of a refusal; an unexpected error is logged and answered as "internal error". */
function reasonOf(e: unknown, ctx: KmipRequestContext): [number, string] {
  if (e instanceof KmipFailure) return [e.reason, e.message];
  if (e instanceof FieldError) return [e.missing ? ResultReason.MissingData : ResultReason.InvalidField, e.message];
  if (e instanceof KmipObjectError) {
    if (e.refusal === "destroyed") return [ResultReason.KeyValueNotPresent, e.message];
    if (e.refusal === "active") return [ResultReason.PermissionDenied, e.message];
    return [ResultReason.IllegalOperation, e.message];
  }
  if (e instanceof AtrestError) {
    switch (e.code) {
      case "NOT_FOUND":
        return [ResultReason.ItemNotFound, e.message];
      case "PERMISSION_DENIED":
        return [ResultReason.PermissionDenied, e.message];
      case "AUTH_FAILED":
        return [ResultReason.AuthenticationNotSuccessful, e.message];
      case "INTEGRITY":
        return [ResultReason.CryptographicFailure, e.message];
      case "UNSUPPORTED":
        return [ResultReason.FeatureNotSupported, e.message];
      case "INVALID_INPUT":
        return [ResultReason.InvalidField, e.message];
      case "CONFLICT":
      case "EXISTS":
        return [ResultReason.IllegalOperation, e.message];
      default:
        return [ResultReason.GeneralFailure, e.message];
    }
  }
  ctx.onInternalError?.(e);
  return [ResultReason.GeneralFailure, "internal error"];
}
