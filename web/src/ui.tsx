// Small shared pieces: a modal dialog (the native <dialog>: focus trap, Esc closes), an error line read out by screen
// readers, a hook that loads data and reloads it on demand.
import type { ComponentChildren } from "preact";
import { useCallback, useEffect, useRef, useState } from "preact/hooks";
import { message } from "./api.ts";

export function Dialog(props: { title: string; onClose: () => void; children: ComponentChildren }) {
  const ref = useRef<HTMLDialogElement>(null);
  useEffect(() => {
    const d = ref.current;
    if (d && !d.open) d.showModal();
  }, []);
  return (
    <dialog ref={ref} aria-labelledby="dialog-title" onClose={props.onClose} onCancel={props.onClose}>
      <h2 id="dialog-title">{props.title}</h2>
      {props.children}
    </dialog>
  );
}

export function ErrorText(props: { error?: unknown }) {
  if (!props.error) return null;
  return (
    <p class="error" role="alert">
      {message(props.error)}
    </p>
  );
}

export interface Loaded<T> {
  data: T | undefined;
  error: unknown;
  loading: boolean;
  reload: () => void;
}

export function useLoad<T>(load: () => Promise<T>, deps: unknown[]): Loaded<T> {
  const [data, setData] = useState<T | undefined>(undefined);
  const [error, setError] = useState<unknown>(undefined);
  const [loading, setLoading] = useState(true);
  const [tick, setTick] = useState(0);
  useEffect(() => {
    let live = true;
    setLoading(true);
    load().then(
      (d) => {
        if (!live) return;
        setData(d);
        setError(undefined);
        setLoading(false);
      },
      (e) => {
        if (!live) return;
        setError(e);
        setLoading(false);
      },
    );
    return () => {
      live = false;
    };
  }, [...deps, tick]);
  const reload = useCallback(() => setTick((t) => t + 1), []);
  return { data, error, loading, reload };
}

/** A form whose submit runs `action`, showing its error and disabling the button meanwhile. */
export function ActionForm(props: {
  action: (form: FormData) => Promise<void>;
  submit: string;
  children?: ComponentChildren;
  class?: string;
  label?: string;
  /** Clear the fields after a success (passwords and passphrases do not stay in the page). */
  reset?: boolean;
}) {
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<unknown>(undefined);
  return (
    <form
      class={props.class}
      aria-label={props.label}
      onSubmit={async (e) => {
        e.preventDefault();
        const form = e.currentTarget as HTMLFormElement;
        setBusy(true);
        setError(undefined);
        try {
          await props.action(new FormData(form));
          if (props.reset) form.reset();
        } catch (err) {
          setError(err);
        } finally {
          setBusy(false);
        }
      }}
    >
      {props.children}
      <button type="submit" disabled={busy}>
        {props.submit}
      </button>
      <ErrorText error={error} />
    </form>
  );
}

export function Field(props: {
  label: string;
  name: string;
  type?: string;
  value?: string;
  required?: boolean;
  autocomplete?: string;
  placeholder?: string;
  inputmode?: string;
  autofocus?: boolean;
}) {
  const id = `f-${props.name}`;
  return (
    <p class="field">
      <label for={id}>{props.label}</label>
      <input
        id={id}
        name={props.name}
        type={(props.type ?? "text") as "text"}
        value={props.value}
        required={props.required}
        autocomplete={props.autocomplete}
        placeholder={props.placeholder}
        inputMode={props.inputmode as "numeric" | undefined}
        autofocus={props.autofocus}
      />
    </p>
  );
}

export const str = (f: FormData, k: string): string => String(f.get(k) ?? "").trim();
