//! One request being answered: its sampler, its text stream, its stop tokens and stop strings, and the channel its
//! text goes to. The scheduler hands it each sampled token ([`Sequence::accept`]); it says when the reply is over.
//! What counts as the reply is `gemma generate`'s rule (`generate::decode_loop`): a stop token ends it (and is not
//! text), so does `max_tokens`; text streams as complete UTF-8 pieces.

use tokio::sync::mpsc::UnboundedSender;

use super::reply::{ApiError, Finish};
use crate::error::Result;
use crate::sampling::Sampler;
use crate::tokenizer::TextStream;

/// What the scheduler tells the HTTP side about a request, in order: `Started`, any `Text`, then `Done` (or
/// `Failed`, possibly before `Started`).
#[derive(Debug)]
pub enum Event {
    Started {
        prompt_tokens: usize,
    },
    Text(String),
    Done {
        finish: Finish,
        prompt_tokens: usize,
        completion_tokens: usize,
    },
    Failed(ApiError),
}

pub type Events = UnboundedSender<Event>;

/// Holds back text that may be the start of a stop string; cuts the reply where one appears.
pub struct StopText {
    stops: Vec<String>,
    held: String,
}

impl StopText {
    pub fn new(stops: Vec<String>) -> StopText {
        StopText {
            stops,
            held: String::new(),
        }
    }

    /// Adds `delta`; returns the text now safe to send and whether a stop string was found (the text before it is
    /// all that is returned, and the reply is over).
    pub fn push(&mut self, delta: &str) -> (String, bool) {
        self.held.push_str(delta);
        let found = self
            .stops
            .iter()
            .filter_map(|s| self.held.find(s.as_str()))
            .min();
        if let Some(at) = found {
            let out = self.held[..at].to_string();
            self.held.clear();
            return (out, true);
        }
        // Keep the longest tail of `held` that starts some stop string.
        let keep = self
            .stops
            .iter()
            .flat_map(|s| {
                (1..s.len().min(self.held.len() + 1))
                    .filter(|&n| s.is_char_boundary(n) && self.held.ends_with(&s[..n]))
            })
            .max()
            .unwrap_or(0);
        let cut = self.held.len() - keep;
        let out = self.held[..cut].to_string();
        self.held.drain(..cut);
        (out, false)
    }

    /// The text held back at the end of the reply.
    pub fn finish(&mut self) -> String {
        std::mem::take(&mut self.held)
    }
}

pub struct Sequence<'t> {
    pub events: Events,
    pub sampler: Sampler,
    stream: TextStream<'t>,
    stop_ids: Vec<u32>,
    stop_text: StopText,
    max_tokens: usize,
    generated: usize,
    prompt_tokens: usize,
    /// Positions this sequence has in the cache (the position of `next`).
    pub len: usize,
    /// The last sampled token, fed at the next step.
    pub next: u32,
    pub finished: bool,
}

impl<'t> Sequence<'t> {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        events: Events,
        sampler: Sampler,
        stream: TextStream<'t>,
        stop_ids: Vec<u32>,
        stop: Vec<String>,
        max_tokens: usize,
        len: usize,
    ) -> Sequence<'t> {
        Sequence {
            events,
            sampler,
            stream,
            stop_ids,
            stop_text: StopText::new(stop),
            max_tokens,
            generated: 0,
            prompt_tokens: len,
            len,
            next: 0,
            finished: false,
        }
    }

    /// Whether the client went away (its channel closed): the sequence is then dropped at once.
    pub fn cancelled(&self) -> bool {
        self.events.is_closed()
    }

    /// Takes the token sampled after the sequence's last position: sends its text, or ends the reply.
    pub fn accept(&mut self, token: u32) -> Result<()> {
        self.generated += 1;
        if self.stop_ids.contains(&token) {
            return self.end(Finish::Stop);
        }
        if let Some(delta) = self.stream.push(token)? {
            let (text, stopped) = self.stop_text.push(&delta);
            self.send(text);
            if stopped {
                self.finished = true;
                return self.done(Finish::Stop);
            }
        }
        if self.generated >= self.max_tokens {
            return self.end(Finish::Length);
        }
        self.next = token;
        Ok(())
    }

    /// The reply is over: flush the text stream and the held-back text.
    fn end(&mut self, finish: Finish) -> Result<()> {
        self.finished = true;
        if let Some(rest) = self.stream.finish()? {
            let (text, stopped) = self.stop_text.push(&rest);
            self.send(text);
            if stopped {
                return self.done(Finish::Stop);
            }
        }
        let held = self.stop_text.finish();
        self.send(held);
        self.done(finish)
    }

    fn send(&self, text: String) {
        if !text.is_empty() {
            let _ = self.events.send(Event::Text(text));
        }
    }

    fn done(&self, finish: Finish) -> Result<()> {
        let _ = self.events.send(Event::Done {
            finish,
            prompt_tokens: self.prompt_tokens,
            completion_tokens: self.generated,
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::StopText;

    #[test]
    fn stop_strings_are_held_back_and_cut() {
        let mut s = StopText::new(vec!["END".into()]);
        assert_eq!(s.push("abc E"), ("abc ".into(), false));
        assert_eq!(s.push("N"), ("".into(), false));
        assert_eq!(s.push("Dxyz"), ("".into(), true));
        let mut s = StopText::new(vec!["END".into()]);
        assert_eq!(s.push("abE"), ("ab".into(), false));
        assert_eq!(s.push("x"), ("Ex".into(), false));
        assert_eq!(s.push("E"), ("".into(), false));
        assert_eq!(s.finish(), "E");
    }
}
