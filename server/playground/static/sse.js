// Server-sent events read from a fetch() response body (EventSource cannot POST a body or send headers).
// Yields each event's data (its `data:` lines joined by newlines), as the SSE specification defines it:
// events end at a blank line; lines end in \n, \r\n or \r; other fields and ':' comments are skipped.

const LINE_END = /\r\n|\r|\n/g;

export async function* sseData(body) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  let data = [];
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += value;
      let start = 0;
      LINE_END.lastIndex = 0;
      for (let end; (end = LINE_END.exec(buffer)); ) {
        if (end[0] === "\r" && LINE_END.lastIndex === buffer.length) break; // maybe half of a \r\n
        const line = buffer.slice(start, end.index);
        start = LINE_END.lastIndex;
        if (line === "") {
          if (data.length) yield data.join("\n");
          data = [];
        } else if (line.startsWith("data:")) {
          data.push(line.slice(line.startsWith("data: ") ? 6 : 5));
        }
      }
      buffer = buffer.slice(start); // a line the network cut in two: the rest comes with the next read
    }
    if (data.length) yield data.join("\n");
  } finally {
    reader.releaseLock();
  }
}
