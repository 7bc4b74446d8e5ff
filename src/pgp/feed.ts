// Pushes a writer's chunks into a web ReadableStream that openpgp consumes, with backpressure: `push` resolves once
// the queue is below its high-water mark again, so a fast client never makes memory grow with the file size.
import { AtrestError, HandleClosedError } from "../errors.ts";

const HIGH_WATER = 1 << 20;

export class StreamFeed {
  readonly stream: ReadableStream<Uint8Array>;
  #controller!: ReadableStreamDefaultController<Uint8Array>;
  #wake: (() => void) | undefined;
  #failure: unknown;
  #closed = false;

  constructor(highWater = HIGH_WATER) {
    this.stream = new ReadableStream<Uint8Array>(
      {
        start: (c) => {
          this.#controller = c;
        },
        pull: () => this.#wake?.(),
        cancel: (reason) => {
          this.#failure ??= reason ?? new AtrestError("UNSUPPORTED", "stream cancelled");
          this.#wake?.();
        },
      },
      new ByteLengthQueuingStrategy({ highWaterMark: highWater }),
    );
  }

  /** Queues `data`; waits while the consumer is behind. Throws the failure once the stream failed. */
  async push(data: Uint8Array): Promise<void> {
    if (this.#failure) throw this.#failure;
    if (this.#closed) throw new HandleClosedError("handle closed");
    this.#controller.enqueue(data);
    while (!this.#failure && (this.#controller.desiredSize ?? 0) <= 0) {
      await new Promise<void>((resolve) => {
        this.#wake = resolve;
      });
      this.#wake = undefined;
    }
    if (this.#failure) throw this.#failure;
  }

  /** End of input. */
  close(): void {
    if (this.#closed || this.#failure) return;
    this.#closed = true;
    this.#controller.close();
  }

  /** Fails the stream (the consumer's read rejects) and any waiting push. */
  fail(err: unknown): void {
    if (this.#failure) return;
    this.#failure = err;
    if (!this.#closed) {
      try {
        this.#controller.error(err);
      } catch {
        // already errored or closed
      }
    }
    this.#wake?.();
  }

  get failure(): unknown {
    return this.#failure;
  }
}
