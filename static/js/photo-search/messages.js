// What the shopper reads when something goes wrong: plain words, and what to do next.
export const MESSAGES = {
  notImage: "That file is not a picture we can read. Please choose a photo, for example a JPEG or PNG.",
  encodeFailed: "Your browser could not prepare that photo. Please try another one.",
  network: "We could not reach VisualShop. Check your connection and try again.",
  tooLarge: "That photo is too large. Please try a smaller one.",
  tooMany: "Too many searches in a short time. Please wait a moment and try again.",
  badPhoto: "We could not use that photo. Please try another one.",
  forbidden: "Your session has expired. Please reload the page and try again.",
  unavailable: "Search is not available right now. Please try again in a moment.",
};

// An error whose message is meant for the shopper.
export class UserError extends Error {}
