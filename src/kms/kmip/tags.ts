// The KMIP tags and enumerations the server reads or writes (values from the KMIP 1.2 specification §9.1.3).

export const T = {
  ActivationDate: 0x420001,
  AsynchronousCorrelationValue: 0x420006,
  Attribute: 0x420008,
  AttributeIndex: 0x420009,
  AttributeName: 0x42000a,
  AttributeValue: 0x42000b,
  Authentication: 0x42000c,
  BatchCount: 0x42000d,
  BatchItem: 0x42000f,
  BatchErrorContinuationOption: 0x42000e,
  BatchOrderOption: 0x420010,
  BlockCipherMode: 0x420011,
  CompromiseOccurrenceDate: 0x420021,
  CompromiseDate: 0x420020,
  CryptographicAlgorithm: 0x420028,
  CryptographicLength: 0x42002a,
  CryptographicParameters: 0x42002b,
  CryptographicUsageMask: 0x42002c,
  DeactivationDate: 0x42002f,
  DestroyDate: 0x420033,
  InitialDate: 0x420039,
  KeyBlock: 0x420040,
  KeyFormatType: 0x420042,
  KeyMaterial: 0x420043,
  KeyValue: 0x420045,
  LastChangeDate: 0x420048,
  MaximumItems: 0x42004f,
  MaximumResponseSize: 0x420050,
  Name: 0x420053,
  NameType: 0x420054,
  NameValue: 0x420055,
  ObjectType: 0x420057,
  Operation: 0x42005c,
  PaddingMethod: 0x42005f,
  ProtocolVersion: 0x420069,
  ProtocolVersionMajor: 0x42006a,
  ProtocolVersionMinor: 0x42006b,
  QueryFunction: 0x420074,
  RequestHeader: 0x420077,
  RequestMessage: 0x420078,
  RequestPayload: 0x420079,
  ResponseHeader: 0x42007a,
  ResponseMessage: 0x42007b,
  ResponsePayload: 0x42007c,
  ResultMessage: 0x42007d,
  ResultReason: 0x42007e,
  ResultStatus: 0x42007f,
  RevocationMessage: 0x420080,
  RevocationReason: 0x420081,
  RevocationReasonCode: 0x420082,
  SecretData: 0x420085,
  SecretDataType: 0x420086,
  ServerInformation: 0x420088,
  State: 0x42008d,
  SymmetricKey: 0x42008f,
  TemplateAttribute: 0x420091,
  TimeStamp: 0x420092,
  UniqueBatchItemId: 0x420093,
  UniqueIdentifier: 0x420094,
  VendorIdentification: 0x42009d,
  Data: 0x4200c2,
  IvCounterNonce: 0x42003d,
  RandomIv: 0x4200c5,
  IvLength: 0x4200cd,
  TagLength: 0x4200ce,
  AuthenticatedEncryptionAdditionalData: 0x4200fe,
  AuthenticatedEncryptionTag: 0x4200ff,
  OperationPolicyName: 0x42005d,
  ObjectGroup: 0x420056,
  StorageStatusMask: 0x42008e,
  LocatedItems: 0x4200d5,
  KeyCompressionType: 0x420041,
  KeyWrappingSpecification: 0x420047,
  KeyWrappingData: 0x420046,
  Credential: 0x420023,
} as const;

export const Operation = {
  Create: 0x01,
  Register: 0x03,
  Locate: 0x08,
  Get: 0x0a,
  GetAttributes: 0x0b,
  GetAttributeList: 0x0c,
  Activate: 0x12,
  Revoke: 0x13,
  Destroy: 0x14,
  Query: 0x18,
  DiscoverVersions: 0x1e,
  Encrypt: 0x1f,
  Decrypt: 0x20,
} as const;

export const ResultStatus = {
  Success: 0x00,
  OperationFailed: 0x01,
  OperationPending: 0x02,
  OperationUndone: 0x03,
} as const;

export const ResultReason = {
  ItemNotFound: 0x01,
  ResponseTooLarge: 0x02,
  AuthenticationNotSuccessful: 0x03,
  InvalidMessage: 0x04,
  OperationNotSupported: 0x05,
  MissingData: 0x06,
  InvalidField: 0x07,
  FeatureNotSupported: 0x08,
  CryptographicFailure: 0x0a,
  IllegalOperation: 0x0b,
  PermissionDenied: 0x0c,
  KeyFormatTypeNotSupported: 0x10,
  KeyCompressionTypeNotSupported: 0x11,
  KeyValueNotPresent: 0x13,
  GeneralFailure: 0x100,
} as const;

export const ObjectType = {
  SymmetricKey: 0x02,
  SecretData: 0x07,
} as const;

export const State = {
  PreActive: 0x01,
  Active: 0x02,
  Deactivated: 0x03,
  Compromised: 0x04,
  Destroyed: 0x05,
  DestroyedCompromised: 0x06,
} as const;

export const CryptographicAlgorithm = {
  Aes: 0x03,
} as const;

export const BlockCipherMode = {
  Gcm: 0x09,
} as const;

export const KeyFormatType = {
  Raw: 0x01,
  Opaque: 0x02,
  TransparentSymmetricKey: 0x07,
} as const;

export const QueryFunction = {
  QueryOperations: 0x01,
  QueryObjects: 0x02,
  QueryServerInformation: 0x03,
} as const;

export const RevocationReasonCode = {
  Unspecified: 0x01,
  KeyCompromise: 0x02,
  CaCompromise: 0x03,
  AffiliationChanged: 0x04,
  Superseded: 0x05,
  CessationOfOperation: 0x06,
  PrivilegeWithdrawn: 0x07,
} as const;

export const SecretDataType = {
  Password: 0x01,
  Seed: 0x02,
} as const;

export const NameType = {
  UninterpretedTextString: 0x01,
  Uri: 0x02,
} as const;

export const UsageMask = {
  Encrypt: 0x04,
  Decrypt: 0x08,
  WrapKey: 0x10,
  UnwrapKey: 0x20,
  Export: 0x40,
} as const;
