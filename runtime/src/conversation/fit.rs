//! Which oldest messages a [`Conversation`] leaves out so that the rendered conversation and the reply budget fit
//! the context ([`ChatOptions::max_context`](super::ChatOptions::max_context), at most the model's positions).
//!
//! **Not quadratic.** Leaving out the oldest exchange one at a time and rendering the rest again made a
//! long conversation cost a render of the whole conversation per dropped exchange (8,000 messages: 164 s). The
//! candidate starts are the same as that loop's ([`drop_points`]), but after the full conversation does not fit they
//! are searched from the newest end ([`first_fitting`]): O(log k) renders of at most twice the k messages kept. The
//! answer is the same because leaving out more messages never makes the rendered conversation longer.

use super::{ChatModel, Conversation, Turn};
use crate::error::{Error, Result};

/// Where the kept part of `turns` may start, in the order the oldest messages are left out: 0 (everything), then
/// after each oldest exchange (a user message and the assistant's reply; a lone user message alone), while more than
/// two messages remain. The last start keeps the last exchange only.
pub(super) fn drop_points(turns: &[Turn]) -> Vec<usize> {
    let mut points = vec![0];
    let mut start = 0;
    while turns.len() - start > 2 {
        start += if turns[start + 1].message.role == "assistant" {
            2
        } else {
            1
        };
        points.push(start);
    }
    points
}

/// The smallest `i` in `known_false + 1 ..= last` with `fits(i)`, for a `fits` that is false up to some index and
/// true from there on (`fits(known_false)` is false). Probes `last`, then indices further from the end at doubling
/// distances until one does not fit, then bisects: O(log(last − answer)) probes, none before `2·answer − last`.
/// `Ok(None)` when `fits(last)` is false.
pub(super) fn first_fitting<E>(
    known_false: usize,
    last: usize,
    mut fits: impl FnMut(usize) -> std::result::Result<bool, E>,
) -> std::result::Result<Option<usize>, E> {
    if last <= known_false || !fits(last)? {
        return Ok(None);
    }
    let (mut lo, mut hi) = (known_false, last);
    let mut step = 1;
    while hi - lo > 1 {
        let probe = hi.saturating_sub(step).max(lo + 1);
        if fits(probe)? {
            hi = probe;
            step *= 2;
        } else {
            lo = probe;
            break;
        }
    }
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if fits(mid)? {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    Ok(Some(hi))
}

/// Work done fitting one turn: template renders and the bytes they produced (reported in [`super::TurnReport`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RenderWork {
    pub renders: usize,
    pub bytes: usize,
}

impl<M: ChatModel> Conversation<M> {
    /// The number of oldest messages to leave out so that the rendered conversation plus `max_new_tokens` fits the
    /// context, and that rendering (text, ids); counts the renders in `work`. Fails with [`Error::PromptTooLong`]
    /// when the last exchange alone does not fit.
    pub(super) fn fit_to_context(
        &self,
        work: &mut RenderWork,
    ) -> Result<(usize, String, Vec<u32>)> {
        let limit = self.context_limit();
        let max_new = self.options.generate.max_new_tokens;
        let fits = |ids: &[u32]| ids.len().saturating_add(max_new) <= limit;
        let points = drop_points(&self.turns);
        let mut render = |i: usize| -> Result<(String, Vec<u32>)> {
            let (text, ids) = self.render(&self.turns[points[i]..])?;
            work.renders += 1;
            work.bytes += text.len();
            Ok((text, ids))
        };
        let (text, ids) = render(0)?;
        if fits(&ids) {
            return Ok((0, text, ids));
        }
        let last = points.len() - 1;
        // The renders that fit, by index, and the length of the last one's (for the error).
        let mut fitting: Vec<(usize, String, Vec<u32>)> = Vec::new();
        let mut last_len = ids.len();
        let found = first_fitting(0, last, |i| {
            let (text, ids) = render(i)?;
            if i == last {
                last_len = ids.len();
            }
            let ok = fits(&ids);
            if ok {
                fitting.push((i, text, ids));
            }
            Ok::<_, Error>(ok)
        });
        let found = match found {
            Ok(found) => found,
            // A suffix the template refuses (e.g. two assistant messages in a row at its start): decide as the
            // one-exchange-at-a-time loop would, which renders only the starts before the answer.
            Err(_) => {
                fitting.clear();
                let mut found = None;
                for i in 1..=last {
                    let (text, ids) = render(i)?;
                    last_len = ids.len();
                    if fits(&ids) {
                        fitting.push((i, text, ids));
                        found = Some(i);
                        break;
                    }
                }
                found
            }
        };
        match found.and_then(|i| fitting.into_iter().find(|f| f.0 == i)) {
            Some((i, text, ids)) => Ok((points[i], text, ids)),
            None => Err(Error::PromptTooLong {
                prompt_tokens: last_len,
                max_new_tokens: max_new,
                max_positions: limit,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_fitting_matches_a_linear_scan_in_few_probes() {
        for last in 1..70usize {
            for answer in 1..=last + 1 {
                let mut probes = 0;
                let got = first_fitting(0, last, |i| {
                    probes += 1;
                    Ok::<_, ()>(i >= answer)
                })
                .unwrap();
                assert_eq!(got, (answer <= last).then_some(answer), "{last} {answer}");
                let distance = (last + 1 - answer.min(last)) as f64;
                assert!(
                    probes as f64 <= 2.0 * distance.log2() + 3.0,
                    "{last} {answer}: {probes}"
                );
            }
        }
    }
}
