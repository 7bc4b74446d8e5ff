import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { AtrestError, HandleClosedError, NotFoundError } from "../../../src/errors.ts";
import { toStatus } from "../../../src/protocols/sftp/errors.ts";
import { STATUS } from "../../../src/protocols/sftp/protocol/packets.ts";

describe("SFTP status mapping", () => {
  it("a closed or unknown handle keeps the status it had as INVALID_INPUT, with its message", () => {
    assert.deepEqual(toStatus(new HandleClosedError("invalid handle")), {
      code: STATUS.BAD_MESSAGE,
      message: "invalid handle",
      internal: false,
    });
    assert.equal(new HandleClosedError().code, "HANDLE_CLOSED");
    assert.deepEqual(toStatus(new AtrestError("INVALID_INPUT", "bad flags")), {
      code: STATUS.BAD_MESSAGE,
      message: "bad flags",
      internal: false,
    });
  });

  it("typed errors map to fixed messages; anything else is an internal failure without detail", () => {
    assert.deepEqual(toStatus(new NotFoundError("/x")), {
      code: STATUS.NO_SUCH_FILE,
      message: "no such file",
      internal: false,
    });
    assert.deepEqual(toStatus(new Error("secret detail")), {
      code: STATUS.FAILURE,
      message: "internal error",
      internal: true,
    });
  });
});
