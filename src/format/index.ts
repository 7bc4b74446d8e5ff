// The container format's public surface (see docs/format.md). Pure: bytes in, bytes out.
export {
  type ContainerKeys,
  type CreateHeaderOptions,
  createHeader,
  MAX_FILE_ID_BYTES,
  openContainer,
} from "./container.ts";
export {
  FORMAT_VERSION,
  HEADER_PROBE_BYTES,
  type ParsedHeader,
  parseHeader,
  replaceWrappedDek,
} from "./header.ts";
export {
  containerLength,
  DEFAULT_SEGMENT_LOG2,
  type Layout,
  plaintextLength,
  segmentCount,
  segmentIndexAt,
  segmentOffset,
  segmentRange,
} from "./layout.ts";
export { resumeFrom, SegmentWriter, type SegmentWriterOptions } from "./writer.ts";
