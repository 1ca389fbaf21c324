// React rendered for real in Node: react-dom/client over a happy-dom document. Importing this
// module installs the document (React DOM needs one before it loads); `mount(t)` gives a
// container and a root that are unmounted when the test ends, pass or fail, so a failing test
// never leaves clients reconnecting (and the runner waiting) forever.
import { Window } from "happy-dom";

export const win = new Window({ url: "http://localhost/" });
globalThis.window = win;
globalThis.document = win.document;
if (!("navigator" in globalThis)) globalThis.navigator = win.navigator; // Node 20 has none

export const React = await import("react");
export const { createRoot } = await import("react-dom/client");
export const h = React.createElement;

/** A container and a React root, unmounted and removed when the test ends. */
export function mount(t) {
  const container = document.createElement("div");
  document.body.appendChild(container);
  const root = createRoot(container);
  let mounted = true;
  const unmount = () => {
    if (!mounted) return;
    mounted = false;
    root.unmount();
    container.remove();
  };
  t.after(unmount);
  return { container, render: (el) => root.render(el), unmount };
}

/** Closes the document (after every test of a file). */
export const closeDom = () => win.happyDOM.close();
